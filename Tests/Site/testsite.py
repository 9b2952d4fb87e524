"""A small web site for the browser tests, on loopback: a login form, a single-page app with
client-side routes, fetch/XHR endpoints, a CAPTCHA-like iframe, a 403 page, a slow page and a
page that opens dialogs. Prints `listening on http://127.0.0.1:PORT` once ready.

    python3 Tests/Site/testsite.py [--port 0]
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"count": 0, "status_polls": 0, "lock": threading.Lock()}

PAGES = {
    "/login": ("Sign in - Example", """
<h1>Sign in</h1>
<form id="f" onsubmit="event.preventDefault(); login();">
  <label>Email <input id="email" name="email" type="email" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="signin" type="submit">Sign in</button>
</form>
<p id="echo"></p>
<a href="/forgot">Forgot password?</a> <a href="/signup">Create account</a>
<script>
document.getElementById("email").addEventListener("input", (e) => { document.getElementById("echo").textContent = "typed:" + e.target.value; });
async function login() {
  await fetch("/api/login", { method: "POST", body: JSON.stringify({ email: document.getElementById("email").value }) });
  location.href = "/dashboard";
}
</script>"""),
    "/dashboard": ("Dashboard", """
<h1>Dashboard</h1>
<p>Welcome back. This is your <strong>account</strong> overview.</p>
<nav><a href="/settings">Settings</a></nav>
<button id="inc" onclick="fetch('/api/count', {method: 'POST'}).then(r => r.json()).then(j => { document.getElementById('count').textContent = j.count; })">Add one</button>
<span id="count">?</span>
<select id="color"><option value="red">Red</option><option value="green">Green</option><option value="blue">Blue</option></select>
<select id="many" multiple><option value="a">A</option><option value="b">B</option><option value="c">C</option></select>
<div id="hoverme" onmouseover="this.textContent = 'hovered'">hover me</div>
<textarea id="notes"></textarea>
<div contenteditable="true" id="editor">old</div>
<button id="off" disabled>Disabled</button>
<a id="applink" href="/app">Open the app</a>
<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Pro</td><td>10</td></tr></table>
<div style="height: 3000px"></div>
<p id="bottom">The end</p>
<footer>Footer text that extract leaves out</footer>
<script>setTimeout(() => { const d = document.createElement('div'); d.id = 'delayed'; d.textContent = 'here now'; document.body.prepend(d); }, 400);
document.addEventListener("keydown", (e) => { document.title = "Dashboard:" + e.key; });</script>"""),
    "/app": ("App", """
<h1 id="where">home</h1>
<button id="to-settings" onclick="history.pushState({}, '', '/app/settings'); document.getElementById('where').textContent = 'settings'; fetch('/api/data');">Settings</button>
<script>if (location.pathname === '/app/settings') document.getElementById('where').textContent = 'settings';</script>"""),
    "/captcha": ("Just a moment", """
<h1>One more step</h1>
<p>Please complete the security check to continue.</p>
<iframe src="/recaptcha/api2/anchor?k=test" width="300" height="80"></iframe>"""),
    "/recaptcha/api2/anchor": ("reCAPTCHA", "<div>I'm a checkbox</div>"),
    "/dialogs": ("Dialogs", """<button id="alert" onclick="alert('hello'); document.getElementById('after').textContent = 'dismissed';">Alert</button><p id="after"></p>"""),
    "/later": ("Later", """<p>Wait for it</p><script>setTimeout(() => { const d = document.createElement('h2'); d.id = 'welcome'; d.textContent = 'Welcome'; document.body.append(d); }, 800);</script>"""),
    "/redirect-soon": ("Redirecting", """<p>Taking you to the dashboard</p><script>setTimeout(() => { location.href = '/dashboard'; }, 1200);</script>"""),
    "/poll": ("Polling", """<p id="st">waiting</p><script>
const poll = async () => { const r = await fetch('/api/status'); const j = await r.json(); document.getElementById('st').textContent = j.ready ? 'ready' : 'waiting'; if (!j.ready) setTimeout(poll, 300); };
setTimeout(poll, 300);</script>"""),
    "/overlay": ("Overlay", """
<button id="under" onclick="fetch('/api/count', {method: 'POST'})">Count me</button>
<div id="cover" style="position: fixed; inset: 0; background: rgba(0,0,0,0.3)"></div>
<div id="forever" style="position: relative"><button id="buried">Buried</button>
  <div style="position: absolute; inset: 0; background: white"></div></div>
<script>setTimeout(() => document.getElementById('cover').remove(), 700);</script>"""),
    "/signup": ("Create your account", "<h1>Sign up</h1>"),
    "/forgot": ("Reset your password", "<h1>Reset</h1>"),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="text/html; charset=utf-8"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def page(self, title, body):
        return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>{body}</body></html>"

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api/count":
            with STATE["lock"]:
                return self.send(200, json.dumps({"count": STATE["count"]}), "application/json")
        if path == "/api/data":
            return self.send(200, json.dumps({"items": [1, 2, 3]}), "application/json")
        if path == "/api/status":
            with STATE["lock"]:
                STATE["status_polls"] += 1
                ready = STATE["status_polls"] >= 3
            return self.send(200, json.dumps({"ready": ready, "polls": STATE["status_polls"]}), "application/json")
        if path == "/forbidden":
            return self.send(403, self.page("403 Forbidden", "<h1>Access denied</h1><p>You do not have permission to view this page.</p>"))
        if path == "/slow":
            time.sleep(1.5)
            return self.send(200, self.page("Slow", "<p>finally</p>"))
        if path == "/app/settings":
            path = "/app"
        if path in PAGES:
            title, body = PAGES[path]
            return self.send(200, self.page(title, body))
        if path == "/":
            return self.send(200, self.page("Home", "<h1>Home</h1><a href='/login'>Log in</a>"))
        return self.send(404, self.page("Not found", "<h1>Not found</h1>"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0]
        if path == "/api/count":
            with STATE["lock"]:
                STATE["count"] += 1
                return self.send(200, json.dumps({"count": STATE["count"]}), "application/json")
        if path == "/api/login":
            return self.send(200, json.dumps({"ok": True}), "application/json")
        return self.send(404, "{}", "application/json")


def main():
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
