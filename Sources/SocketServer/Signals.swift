import Glibc
import CSystem

/// Delivers Unix signals on the event loop through a signalfd. `block` must run on the main
/// thread before any other thread starts, so that every thread inherits the blocked mask and
/// no signal can slip past the descriptor.
public final class SignalSource: Selectable, @unchecked Sendable {
    public let fd: Int32
    private let handler: (Int32) -> Void

    public static func block(_ signals: [Int32]) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Creates the descriptor for `signals` (already blocked) and registers it with `loop`.
    public init(loop: EventLoop, signals: [Int32], handler: @escaping (Int32) -> Void) throws(SystemError) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        fd = signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC))
        guard fd >= 0 else { throw SystemError("signalfd") }
        self.handler = handler
        try loop.register(self, interest: .read)
    }

    public func readable() {
        var info = signalfd_siginfo()
        while read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
            handler(Int32(info.ssi_signo))
        }
    }

    public func writable() {}
}
