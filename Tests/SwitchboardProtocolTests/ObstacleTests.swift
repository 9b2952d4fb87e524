import Testing
import SwitchboardProtocol

/// The obstacle classifier on realistic page inputs: every layer, and the near misses that
/// must not fire.
@Suite struct ObstacleTests {
    typealias E = ObstacleClassifier.Element

    static let longArticle = String(repeating: "Our quarterly results show growth across every region. ", count: 20)

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var input: ObstacleClassifier.Input
        var expected: (String, String)?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        // 1. CAPTCHA
        Case(name: "reCAPTCHA frame", input: .init(url: "https://shop.test/checkout", title: "Checkout", markdown: "Almost there",
             elements: [], frameURLs: ["https://shop.test/", "https://www.google.com/recaptcha/api2/anchor?k=x"]), expected: ("captcha", "high")),
        Case(name: "Cloudflare challenge", input: .init(url: "https://news.test/", title: "Just a moment...", markdown: "",
             elements: [], frameURLs: ["https://challenges.cloudflare.com/cdn-cgi/challenge-platform/h/b/turnstile/if/ov2/av0"]), expected: ("captcha", "high")),
        Case(name: "hCaptcha frame", input: .init(url: "https://a.test/", title: "A", markdown: "x", elements: [],
             frameURLs: ["https://newassets.hcaptcha.com/captcha/v1/abc/static/hcaptcha.html"]), expected: ("captcha", "high")),
        Case(name: "captcha URL", input: .init(url: "https://a.test/captcha?return=/", title: "Check", markdown: "", elements: []), expected: ("captcha", "high")),
        Case(name: "human prompt", input: .init(url: "https://a.test/", title: "Security", markdown: "Please verify you are human to continue", elements: []),
             expected: ("captcha", "high")),
        Case(name: "a blog post about CAPTCHAs is not one", input: .init(url: "https://blog.test/posts/bots", title: "How bots are stopped",
             markdown: longArticle + "Sites use puzzles.", elements: [E(role: "link", name: "Home")]), expected: nil),
        // 2. Access denied
        Case(name: "403 title", input: .init(url: "https://a.test/admin", title: "403 Forbidden", markdown: "nginx", elements: []), expected: ("access_denied", "high")),
        Case(name: "blocked text", input: .init(url: "https://a.test/", title: "Attention Required", markdown: "Sorry, you have been blocked", elements: []),
             expected: ("access_denied", "high")),
        Case(name: "rate limited", input: .init(url: "https://api.test/", title: "Error", markdown: "429 Too Many Requests", elements: []), expected: ("access_denied", "high")),
        Case(name: "forbidden in the path", input: .init(url: "https://a.test/errors/forbidden", title: "Oops", markdown: "x", elements: []), expected: ("access_denied", "high")),
        Case(name: "a price of 403 is not a block", input: .init(url: "https://shop.test/item/7", title: "Lamp", markdown: longArticle + "Price: 403 EUR", elements: []),
             expected: nil),
        // 3. Password field with an auth URL or title
        Case(name: "login form", input: .init(url: "https://a.test/login", title: "Welcome", markdown: longArticle,
             elements: [E(role: "textbox", name: "Email"), E(role: "textbox", name: "Password")]), expected: ("auth_wall", "high")),
        Case(name: "custom password component titled sign in", input: .init(url: "https://a.test/", title: "Sign in to Acme", markdown: longArticle,
             elements: [E(role: "textbox", name: "Your password")]), expected: ("auth_wall", "high")),
        // 4. Several signals
        Case(name: "OAuth and sign-up", input: .init(url: "https://a.test/start", title: "Acme", markdown: longArticle,
             elements: [E(role: "button", name: "Continue with Google"), E(role: "link", name: "Sign up for free")]), expected: ("auth_wall", "high")),
        Case(name: "password and forgot link", input: .init(url: "https://a.test/account", title: "Account", markdown: longArticle,
             elements: [E(role: "textbox", name: "Password"), E(role: "link", name: "Forgot password?")]), expected: ("auth_wall", "high")),
        Case(name: "one signal on a short page", input: .init(url: "https://a.test/members", title: "Members", markdown: "Members only.",
             elements: [E(role: "button", name: "Sign in")]), expected: ("auth_wall", "low")),
        Case(name: "one signal on a long page", input: .init(url: "https://a.test/news", title: "News", markdown: longArticle,
             elements: [E(role: "button", name: "Sign in")]), expected: nil),
        Case(name: "a Log in link in the navbar is not a wall", input: .init(url: "https://a.test/", title: "Acme - Home", markdown: longArticle,
             elements: [E(role: "link", name: "Log in"), E(role: "link", name: "Pricing"), E(role: "link", name: "Docs")]), expected: nil),
        Case(name: "a newsletter field is not a password", input: .init(url: "https://a.test/", title: "Acme", markdown: longArticle,
             elements: [E(role: "textbox", name: "Email address"), E(role: "button", name: "Subscribe")]), expected: nil),
        Case(name: "an empty page", input: .init(url: "about:blank", title: "", markdown: "", elements: []), expected: nil),
    ]

    @Test(arguments: cases)
    func classifies(_ c: Case) {
        let f = ObstacleClassifier.classify(c.input)
        #expect(f?.type == c.expected?.0 && f?.confidence == c.expected?.1, "\(c.name): \(String(describing: f))")
    }

    @Test func onlyTheFirst4000CharactersCount() {
        let input = ObstacleClassifier.Input(url: "https://a.test/", title: "T", markdown: String(repeating: "a", count: 4000) + " access denied",
                                             elements: [])
        #expect(ObstacleClassifier.classify(input) == nil)
    }
}
