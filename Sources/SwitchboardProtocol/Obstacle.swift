/// Classifies what stands between the worker and the page's content (`extract`'s `obstacle`,
/// docs/protocol.md section 5.3): a pure function of what a client can see, shared by clients
/// and tests. Layers run cheapest first and the first that fires wins; it leans towards false
/// negatives (a "Log in" link in a navigation bar is not a wall).
public enum ObstacleClassifier {
    /// One interactive element as the accessibility tree names it.
    public struct Element: Sendable, Equatable {
        public var role: String
        public var name: String
        public init(role: String, name: String) { self.role = role; self.name = name }
    }

    public struct Input: Sendable {
        public var url: String
        public var title: String
        /// The page as Markdown; only the first 4 000 characters are looked at.
        public var markdown: String
        public var elements: [Element]
        /// URLs of the page's frames (a CAPTCHA widget lives in its own frame).
        public var frameURLs: [String]
        public init(url: String, title: String, markdown: String, elements: [Element], frameURLs: [String] = []) {
            self.url = url; self.title = title; self.markdown = markdown; self.elements = elements; self.frameURLs = frameURLs
        }
    }

    public struct Finding: Sendable, Equatable {
        /// `captcha`, `access_denied` or `auth_wall`.
        public var type: String
        /// `high` or `low`.
        public var confidence: String
        public var message: String
        public var json: JSON { .object(["type": .string(type), "confidence": .string(confidence), "message": .string(message)]) }
    }

    static let captchaFrames = ["challenges.cloudflare.com", "/cdn-cgi/challenge-platform/", "hcaptcha.com", "/recaptcha/api2/",
                                "/recaptcha/enterprise/", "google.com/recaptcha", "recaptcha.net",
                                "gstatic.com/recaptcha", "/turnstile/", "captcha-delivery.com", "arkoselabs.com", "funcaptcha.com"]
    static let captchaPrompts = ["verify you are human", "verify that you are human", "i'm not a robot", "i am not a robot",
                                 "complete the captcha", "solve the captcha", "checking your browser", "are you a robot",
                                 "press and hold", "prove you're human", "security check to access"]
    static let deniedTitle = ["403", "forbidden", "access denied", "blocked", "too many requests", "rate limited", "rate-limited"]
    static let deniedText = ["403 forbidden", "error 403", "http 403", "access denied", "access to this page has been denied",
                             "you have been blocked", "this request was blocked", "too many requests", "rate limited", "rate-limited",
                             "you are being rate limited"]
    static let authPath = ["login", "log-in", "signin", "sign-in", "sign_in", "/auth", "/sso", "session/new", "oauth", "authenticate"]
    static let authTitle = ["sign in", "sign-in", "log in", "log-in", "login", "signin", "authenticate", "sign on"]
    static let oauthProviders = ["google", "apple", "facebook", "github", "microsoft", "twitter", "linkedin", "okta"]

    public static func classify(_ input: Input) -> Finding? {
        let url = input.url.lowercased()
        let title = input.title.lowercased()
        let text = String(input.markdown.prefix(4000)).lowercased()

        // 1. CAPTCHA: a known challenge frame, a CAPTCHA URL, or a prompt.
        if input.frameURLs.contains(where: { f in captchaFrames.contains { f.lowercased().contains($0) } })
            || url.contains("captcha") || url.contains("/cdn-cgi/challenge-platform")
            || captchaPrompts.contains(where: { text.contains($0) || title.contains($0) }) {
            return Finding(type: "captcha", confidence: "high", message: "the page asks the user to solve a CAPTCHA")
        }
        // 2. Blocked: 403, forbidden, rate limited.
        if deniedTitle.contains(where: { title.contains($0) }) || deniedText.contains(where: { text.contains($0) })
            || path(of: url).split(separator: "/").contains(where: { $0 == "403" || $0 == "forbidden" || $0 == "blocked" }) {
            return Finding(type: "access_denied", confidence: "high", message: "the site refuses access (blocked, forbidden or rate limited)")
        }
        // 3 and 4. Sign-in walls, from accessible roles and names.
        let password = input.elements.contains { isTextbox($0.role) && $0.name.lowercased().contains("password") }
        let authURL = authPath.contains { path(of: url).contains($0) }
        let authTitled = authTitle.contains { title.contains($0) }
        if password && (authURL || authTitled) {
            return Finding(type: "auth_wall", confidence: "high", message: "the page asks the user to sign in")
        }
        var signals = 0
        if password { signals += 1 }
        if authURL { signals += 1 }
        if authTitled { signals += 1 }
        let buttons = input.elements.filter { $0.role == "button" }.map { $0.name.lowercased() }
        let links = input.elements.filter { $0.role == "link" }.map { $0.name.lowercased() }
        if buttons.contains(where: { ["sign in", "log in", "login", "sign on", "continue"].contains($0.trimmingWhitespace()) }) { signals += 1 }
        if links.contains(where: { n in ["sign up", "create account", "create an account", "register", "join now"].contains { n.contains($0) } }) { signals += 1 }
        if (links + buttons).contains(where: { $0.contains("forgot") && ($0.contains("password") || $0.contains("username")) }) { signals += 1 }
        if buttons.contains(where: { b in (b.contains("continue with") || b.contains("sign in with") || b.contains("log in with"))
            && oauthProviders.contains { b.contains($0) } }) { signals += 1 }
        if signals >= 2 {
            return Finding(type: "auth_wall", confidence: "high", message: "the page asks the user to sign in")
        }
        if signals == 1 && input.markdown.count < 400 {
            return Finding(type: "auth_wall", confidence: "low", message: "the page may ask the user to sign in")
        }
        return nil
    }

    static func isTextbox(_ role: String) -> Bool { role == "textbox" || role == "searchbox" }

    /// The path of a URL (what follows the host), lowercased by the caller.
    static func path(of url: String) -> String {
        guard let scheme = url.range(of: "://") else { return url }
        let rest = url[scheme.upperBound...]
        return rest.firstIndex(of: "/").map { String(rest[$0...]) } ?? "/"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
