import Glibc
import CSystem

/// Thin wrappers over the socket calls the server needs.
public enum Socket {
    /// Creates a non-blocking listening socket on `host:port` (IPv4 or IPv6 literal, or
    /// "localhost"). Port 0 picks a free port; `boundPort` tells which.
    public static func listen(host: String, port: Int, backlog: Int32 = 4096) throws(SystemError) -> Int32 {
        let isV6 = host.contains(":")
        let family = isV6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var rc: Int32
        if isV6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in6()
            addr.sin6_family = sa_family_t(AF_INET6)
            addr.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, host, &addr.sin6_addr) == 1 else { Glibc.close(fd); throw SystemError("inet_pton(\(host))", EINVAL) }
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            let h = host == "localhost" ? "127.0.0.1" : host
            guard inet_pton(AF_INET, h, &addr.sin_addr) == 1 else { Glibc.close(fd); throw SystemError("inet_pton(\(host))", EINVAL) }
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard rc == 0 else { let e = errno; Glibc.close(fd); throw SystemError("bind(\(host):\(port))", e) }
        guard Glibc.listen(fd, backlog) == 0 else { let e = errno; Glibc.close(fd); throw SystemError("listen", e) }
        return fd
    }

    /// The local port a socket is bound to.
    public static func boundPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return port(of: storage)
    }

    static func port(of storage: sockaddr_storage) -> Int {
        var s = storage
        if Int32(s.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) } }
        }
        return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) } }
    }

    /// "ip:port" (IPv6 in brackets).
    static func describe(_ storage: sockaddr_storage) -> String {
        var s = storage
        var buf = [CChar](repeating: 0, count: 64)
        if Int32(s.ss_family) == AF_INET6 {
            withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                var a = p.pointee.sin6_addr
                _ = inet_ntop(AF_INET6, &a, &buf, 64)
            } }
            return "[\(cString(buf))]:\(port(of: storage))"
        }
        withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
            var a = p.pointee.sin_addr
            _ = inet_ntop(AF_INET, &a, &buf, 64)
        } }
        return "\(cString(buf)):\(port(of: storage))"
    }

    enum Accepted {
        case connection(fd: Int32, remote: String, ip: String)
        /// Nothing is waiting (or the connection was aborted before we took it).
        case none
        /// Out of descriptors or kernel memory: stop accepting for a while.
        case exhausted(errno: Int32)
    }

    /// Accepts one connection (non-blocking, close-on-exec, TCP_NODELAY).
    static func accept(_ listener: Int32) -> Accepted {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                accept4(listener, $0, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            }
        }
        guard fd >= 0 else {
            let e = errno
            return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM ? .exhausted(errno: e) : .none
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let remote = describe(storage)
        let ip = remote.hasPrefix("[") ? String(remote.dropFirst().prefix { $0 != "]" }) : String(remote.prefix { $0 != ":" })
        return .connection(fd: fd, remote: remote, ip: ip)
    }

    private static func cString(_ buf: [CChar]) -> String {
        String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Raises the open-file soft limit to the hard limit (one descriptor per connection).
    public static func raiseFileLimit() {
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
    }

    /// Ignore SIGPIPE process-wide: a write to a reset socket must return EPIPE, not kill us.
    public static func ignoreSIGPIPE() { signal(SIGPIPE, SIG_IGN) }
}
