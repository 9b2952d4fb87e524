import COpenSSL
import WebSocketCore

/// Random identifiers and token hashing.
public enum Crypto {
    /// `count` bytes from the system's CSPRNG.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<count { out[i] = UInt8.random(in: 0...255, using: &rng) }
        return out
    }

    /// URL-safe base64 without padding.
    public static func base64url(_ bytes: [UInt8]) -> String {
        String(Base64.encode(bytes).filter { $0 != "=" }.map { $0 == "+" ? "-" : ($0 == "/" ? "_" : $0) })
    }

    /// A token with `bits` of randomness (192 by default) and a readable prefix.
    public static func token(prefix: String, bits: Int = 192) -> String {
        prefix + base64url(randomBytes(bits / 8))
    }

    public static func sha256(_ s: String) -> [UInt8] {
        let input = Array(s.utf8)
        var digest = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        _ = input.withUnsafeBytes { i in digest.withUnsafeMutableBufferPointer { o in EVP_Digest(i.baseAddress, i.count, o.baseAddress, &len, EVP_sha256(), nil) } }
        return digest
    }

    /// Compares two digests in time independent of where they differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
