import SwitchboardProtocol

/// Scripts sent to clients in `server.hello` (`injectionScripts`, docs/protocol.md 7.4). The client
/// SDK injects them into the webview and provides the bridge `window.__switchboard.emit(event)`,
/// which queues an event of the §7.1 shape into the next `client.events` batch.
public enum InjectionScripts {
    public static let builtIn: [String: String] = [
        "telemetry": telemetry, "network": network, "console": console, "interaction": interaction,
    ]

    /// Resolves configuration entries: a built-in name, or `name=path/to/file.js`.
    public static func load(_ entries: [String]) throws -> [JSON] {
        try entries.map { entry -> JSON in
            if let eq = entry.firstIndex(of: "=") {
                let name = String(entry[..<eq]), path = String(entry[entry.index(after: eq)...])
                guard let source = ServeConfiguration.readFile(path) else { throw ScriptError(description: "cannot read injection script \(path)") }
                return .object(["name": .string(name), "source": .string(source)])
            }
            guard let source = builtIn[entry] else {
                throw ScriptError(description: "unknown built-in injection script \(entry) (built-in: \(builtIn.keys.sorted().joined(separator: ", ")))")
            }
            return .object(["name": .string(entry), "source": .string(source)])
        }
    }

    struct ScriptError: Error, CustomStringConvertible { var description: String }

    static let prelude = """
    (function () {
      var sb = window.__switchboard;
      if (!sb || typeof sb.emit !== "function") { return; }
      var emit = function (type, payload) {
        try { sb.emit({ type: type, ts: Date.now(), source: "client", payload: payload }); } catch (e) {}
      };

    """

    /// Main-frame navigations (load, history API, back/forward, hash changes), uncaught
    /// errors and page timing.
    public static let telemetry = prelude + """
      var last = null;
      var navigated = function (how) {
        var url = String(location.href);
        if (url === last) { return; }
        last = url;
        emit("navigation", { url: url, isMainFrame: window.top === window, how: how, title: document.title });
      };
      ["pushState", "replaceState"].forEach(function (name) {
        var original = history[name];
        history[name] = function () {
          var result = original.apply(this, arguments);
          navigated(name);
          return result;
        };
      });
      window.addEventListener("popstate", function () { navigated("popstate"); });
      window.addEventListener("hashchange", function () { navigated("hashchange"); });
      window.addEventListener("error", function (e) {
        emit("error.uncaught", { message: String(e.message), filename: e.filename, line: e.lineno, column: e.colno });
      });
      window.addEventListener("unhandledrejection", function (e) {
        emit("error.uncaught", { message: "unhandled rejection: " + String(e.reason) });
      });
      window.addEventListener("load", function () {
        var t = performance.getEntriesByType && performance.getEntriesByType("navigation")[0];
        if (t) { emit("performance", { url: String(location.href), domContentLoadedMs: t.domContentLoadedEventEnd, loadMs: t.loadEventEnd }); }
      });
      navigated("load");
    })();
    """

    /// fetch and XMLHttpRequest: `net.request` when sent, `net.response` when answered
    /// (text bodies up to 64 KiB, for yield conditions on bodies).
    public static let network = prelude + """
      var MAX_BODY = 65536;
      var seq = 0;
      var nextId = function () { seq += 1; return "r" + seq; };
      if (window.fetch) {
        var originalFetch = window.fetch;
        window.fetch = function (input, init) {
          var id = nextId();
          var url = String(input && input.url ? input.url : input);
          var method = String((init && init.method) || (input && input.method) || "GET").toUpperCase();
          var started = Date.now();
          emit("net.request", { requestId: id, url: url, method: method });
          return originalFetch.apply(this, arguments).then(function (response) {
            response.clone().text().then(function (body) {
              emit("net.response", { requestId: id, url: response.url || url, method: method, status: response.status,
                                     durationMs: Date.now() - started, body: body.length <= MAX_BODY ? body : undefined });
            }, function () {
              emit("net.response", { requestId: id, url: response.url || url, method: method, status: response.status, durationMs: Date.now() - started });
            });
            return response;
          });
        };
      }
      var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
      XMLHttpRequest.prototype.open = function (method, url) {
        this.__sb = { id: nextId(), method: String(method).toUpperCase(), url: String(url) };
        return open.apply(this, arguments);
      };
      XMLHttpRequest.prototype.send = function () {
        var xhr = this, info = xhr.__sb, started = Date.now();
        if (info) {
          emit("net.request", { requestId: info.id, url: info.url, method: info.method });
          xhr.addEventListener("loadend", function () {
            var body;
            try { if (!xhr.responseType || xhr.responseType === "text") { body = xhr.responseText; } } catch (e) {}
            emit("net.response", { requestId: info.id, url: xhr.responseURL || info.url, method: info.method, status: xhr.status,
                                   durationMs: Date.now() - started, body: body && body.length <= MAX_BODY ? body : undefined });
          });
        }
        return send.apply(this, arguments);
      };
    })();
    """

    /// console.* calls, with their level and text (each argument cut to 2 KiB).
    public static let console = prelude + """
      var text = function (v) {
        var s;
        try { s = typeof v === "string" ? v : JSON.stringify(v); } catch (e) { s = String(v); }
        return s && s.length > 2048 ? s.slice(0, 2048) + "…" : s;
      };
      ["log", "info", "warn", "error", "debug"].forEach(function (level) {
        var original = console[level];
        console[level] = function () {
          emit("console", { level: level, text: Array.prototype.map.call(arguments, text).join(" ") });
          return original.apply(console, arguments);
        };
      });
    })();
    """

    /// What the user does (click, input, submit, key presses of named keys), without values:
    /// typed text never leaves the device through this script.
    public static let interaction = prelude + """
      var describe = function (el) {
        if (!el || !el.tagName) { return null; }
        var d = el.tagName.toLowerCase();
        if (el.id) { d += "#" + el.id; }
        if (el.name) { d += "[name=" + el.name + "]"; }
        return d;
      };
      document.addEventListener("click", function (e) { emit("user.interaction", { kind: "click", target: describe(e.target) }); }, true);
      document.addEventListener("input", function (e) { emit("user.interaction", { kind: "input", target: describe(e.target) }); }, true);
      document.addEventListener("submit", function (e) { emit("user.interaction", { kind: "submit", target: describe(e.target) }); }, true);
      document.addEventListener("keydown", function (e) {
        if (e.key && e.key.length > 1) { emit("user.interaction", { kind: "key", key: e.key, target: describe(e.target) }); }
      }, true);
    })();
    """
}
