import Glibc
import CSystem

/// What a registered file descriptor wants to hear about.
public struct Interest: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let read = Interest(rawValue: 1)
    public static let write = Interest(rawValue: 2)
}

public struct ReadinessEvent: Sendable, Equatable {
    public var fd: Int32
    public var readable: Bool
    public var writable: Bool
    /// Error or hang-up on the descriptor.
    public var failed: Bool

    public init(fd: Int32, readable: Bool, writable: Bool, failed: Bool = false) {
        self.fd = fd; self.readable = readable; self.writable = writable; self.failed = failed
    }
}

/// Readiness notification behind a small protocol: `EpollSelector` in production, a scripted
/// selector in tests. Only the event loop thread calls it, except `wakeup`.
public protocol Selector: AnyObject, Sendable {
    func register(fd: Int32, interest: Interest) throws(SystemError)
    func reregister(fd: Int32, interest: Interest) throws(SystemError)
    func deregister(fd: Int32)
    /// Waits up to `timeoutMs` (-1: forever) and appends ready descriptors to `events`.
    func wait(timeoutMs: Int32, into events: inout [ReadinessEvent]) throws(SystemError)
    /// Interrupts a `wait` from any thread.
    func wakeup()
    func close()
}

public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public var call: String
    public var errno: Int32
    public init(_ call: String, _ errno: Int32 = Glibc.errno) { self.call = call; self.errno = errno }
    public var description: String { "\(call): \(String(validatingCString: strerror(errno)) ?? "error") (errno \(errno))" }
}

/// Level-triggered epoll with an eventfd for cross-thread wake-ups.
public final class EpollSelector: Selector, @unchecked Sendable {
    // epfd/eventFD are immutable after init; epoll_ctl and epoll_wait are thread-safe.
    private let epfd: Int32
    private let eventFD: Int32
    private var buffer: [epoll_event]

    public init(maxEvents: Int = 256) throws(SystemError) {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw SystemError("epoll_create1") }
        eventFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard eventFD >= 0 else { throw SystemError("eventfd") }
        buffer = [epoll_event](repeating: epoll_event(), count: maxEvents)
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = eventFD
        guard epoll_ctl(epfd, EPOLL_CTL_ADD, eventFD, &ev) == 0 else { throw SystemError("epoll_ctl") }
    }

    private func mask(_ interest: Interest) -> UInt32 {
        var m: UInt32 = EPOLLRDHUP.rawValue
        if interest.contains(.read) { m |= EPOLLIN.rawValue }
        if interest.contains(.write) { m |= EPOLLOUT.rawValue }
        return m
    }

    public func register(fd: Int32, interest: Interest) throws(SystemError) {
        var ev = epoll_event()
        ev.events = mask(interest)
        ev.data.fd = fd
        guard epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0 else { throw SystemError("epoll_ctl(ADD)") }
    }

    public func reregister(fd: Int32, interest: Interest) throws(SystemError) {
        var ev = epoll_event()
        ev.events = mask(interest)
        ev.data.fd = fd
        guard epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0 else { throw SystemError("epoll_ctl(MOD)") }
    }

    public func deregister(fd: Int32) {
        var ev = epoll_event()
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev)
    }

    public func wait(timeoutMs: Int32, into events: inout [ReadinessEvent]) throws(SystemError) {
        let n = buffer.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, Int32($0.count), timeoutMs) }
        if n < 0 {
            if errno == EINTR { return }
            throw SystemError("epoll_wait")
        }
        for i in 0..<Int(n) {
            let e = buffer[i]
            let fd = e.data.fd
            if fd == eventFD {
                var v: UInt64 = 0
                _ = read(eventFD, &v, 8)
                continue
            }
            let failed = e.events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
            events.append(ReadinessEvent(fd: fd, readable: e.events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue) != 0 || failed,
                                         writable: e.events & EPOLLOUT.rawValue != 0, failed: failed))
        }
    }

    public func wakeup() {
        var one: UInt64 = 1
        _ = write(eventFD, &one, 8)
    }

    public func close() {
        Glibc.close(eventFD)
        Glibc.close(epfd)
    }
}
