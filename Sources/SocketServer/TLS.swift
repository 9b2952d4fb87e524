import COpenSSL
import Glibc

public struct TLSError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ what: String) {
        var detail = ""
        let code = ERR_get_error()
        if code != 0 {
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            detail = ": " + String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        ERR_clear_error()
        description = what + detail
    }
}

/// A server TLS configuration: certificate chain and key from PEM files, TLS 1.2 minimum,
/// forward-secret AEAD ciphers only, ALPN `http/1.1`. Immutable once made; a reload makes a
/// new one (connections keep the context they started with).
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let certificatePath: String
    public let keyPath: String

    /// TLS 1.2 suites: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305. TLS 1.3 uses OpenSSL's defaults (all AEAD).
    public static let cipherList = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

    /// Key exchange groups (Mozilla "intermediate"): X25519, P-256, P-384.
    public static let groups = "X25519:P-256:P-384"

    public init(certificatePath: String, keyPath: String) throws(TLSError) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError("cannot create a TLS context") }
        self.ctx = ctx
        guard sb_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else { throw TLSError("cannot require TLS 1.2") }
        guard SSL_CTX_set_cipher_list(ctx, TLSContext.cipherList) == 1 else { throw TLSError("cannot set the cipher list") }
        sb_SSL_CTX_set_server_options(ctx)
        guard sb_SSL_CTX_set1_groups_list(ctx, TLSContext.groups) == 1 else { throw TLSError("cannot set the key exchange groups") }
        _ = sb_SSL_CTX_set_mode(ctx, Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS))
        guard access(certificatePath, R_OK) == 0 else { throw TLSError("cannot read certificate file \(certificatePath)") }
        guard access(keyPath, R_OK) == 0 else { throw TLSError("cannot read key file \(keyPath)") }
        guard SSL_CTX_use_certificate_chain_file(ctx, certificatePath) == 1 else {
            throw TLSError("certificate file \(certificatePath) holds no usable PEM certificate")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, keyPath, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError("key file \(keyPath) holds no usable PEM private key (or it does not match \(certificatePath))")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError("key file \(keyPath) does not match certificate file \(certificatePath)")
        }
        sb_SSL_CTX_enable_alpn_http11(ctx)
    }

    deinit { SSL_CTX_free(ctx) }
}

/// A client TLS configuration: TLS 1.2 minimum, the peer's certificate verified against the
/// system trust store (plus `trustedCertificatesFile`, PEM, when given) and the host name.
public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer

    public init(trustedCertificatesFile: String? = nil) throws(TLSError) {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError("cannot create a TLS context") }
        self.ctx = ctx
        guard sb_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else { throw TLSError("cannot require TLS 1.2") }
        guard SSL_CTX_set_default_verify_paths(ctx) == 1 else { throw TLSError("cannot load the system trust store") }
        if let file = trustedCertificatesFile {
            guard SSL_CTX_load_verify_locations(ctx, file, nil) == 1 else { throw TLSError("cannot load trusted certificates from \(file)") }
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        _ = sb_SSL_CTX_set_mode(ctx, Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS))
    }

    deinit { SSL_CTX_free(ctx) }
}

/// One TLS connection as a byte transformer over memory BIOs: ciphertext in, plaintext out,
/// and back. No socket: the connection moves the bytes. Confined to its loop.
public final class TLSSession {
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer
    public private(set) var failed = false
    public private(set) var peerClosed = false

    /// A server session.
    public convenience init(context: TLSContext) {
        self.init(ctx: context.ctx)
        SSL_set_accept_state(ssl)
    }

    /// A client session for `host`: SNI is sent for names, and the certificate must match the
    /// name (or the IP address).
    public convenience init(client context: TLSClientContext, host: String) throws(TLSError) {
        self.init(ctx: context.ctx)
        SSL_set_connect_state(ssl)
        let isIP = host.contains(":") || host.split(separator: ".").allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) }
        if isIP {
            guard sb_SSL_verify_ip(ssl, host) == 1 else { throw TLSError("cannot verify by IP address \(host)") }
        } else {
            guard sb_SSL_set_tlsext_host_name(ssl, host) == 1 else { throw TLSError("cannot set the server name \(host)") }
            guard SSL_set1_host(ssl, host) == 1 else { throw TLSError("cannot verify by host name \(host)") }
        }
    }

    /// An SSL object over two memory BIOs.
    private init(ctx: OpaquePointer) {
        ssl = SSL_new(ctx)
        rbio = BIO_new(BIO_s_mem())
        wbio = BIO_new(BIO_s_mem())
        _ = sb_BIO_set_mem_eof_return(rbio, -1)
        SSL_set_bio(ssl, rbio, wbio)
    }

    deinit { SSL_free(ssl) }

    public enum HandshakeStatus: Equatable, Sendable {
        case done
        /// Send `takeOutput()` and feed what the peer answers.
        case needsIO
        case failed(String)
    }

    /// Advances the handshake (clients start it with this).
    public func handshake() -> HandshakeStatus {
        ERR_clear_error()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 { return .done }
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .needsIO
        default:
            failed = true
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
                return .failed("certificate verification failed: " + String(cString: text))
            }
            return .failed(TLSError("TLS handshake failed").description)
        }
    }

    public var handshakeDone: Bool { SSL_is_init_finished(ssl) == 1 }

    /// Hands received ciphertext to OpenSSL.
    public func feed(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        _ = BIO_write(rbio, bytes.baseAddress, Int32(bytes.count))
    }

    /// Decrypts into `buffer`: the number of plaintext bytes, 0 when more ciphertext is needed
    /// (or the peer sent close_notify: see `peerClosed`), -1 on a TLS failure.
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        ERR_clear_error()
        let n = SSL_read(ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))
        if n > 0 { return Int(n) }
        switch SSL_get_error(ssl, n) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return 0
        case SSL_ERROR_ZERO_RETURN: peerClosed = true; return 0
        default: failed = true; return -1
        }
    }

    /// Encrypts plaintext; the ciphertext is then in `takeOutput()`.
    public func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            ERR_clear_error()
            let n = SSL_write(ssl, bytes.baseAddress! + offset, Int32(min(bytes.count - offset, 1 << 30)))
            if n <= 0 { failed = true; return false }
            offset += Int(n)
        }
        return true
    }

    /// Sends close_notify (then `takeOutput()`).
    public func shutdown() {
        ERR_clear_error()
        if handshakeDone { _ = SSL_shutdown(ssl) }
    }

    /// Ciphertext waiting to be sent (handshake records, encrypted data, alerts).
    public func takeOutput() -> [UInt8]? {
        let pending = Int(sb_BIO_pending(wbio))
        guard pending > 0 else { return nil }
        var out = [UInt8](repeating: 0, count: pending)
        let n = out.withUnsafeMutableBytes { BIO_read(wbio, $0.baseAddress, Int32(pending)) }
        if n < pending { out.removeSubrange(Int(max(n, 0))...) }
        return out
    }
}
