/// JavaScript the Chromium client runs in pages. Each is a function declaration for
/// `Runtime.callFunctionOn` (with `this` the target element) or an expression.
enum PageScripts {
    /// The bridge the injection scripts call: `window.__switchboard.emit(event)` hands the event
    /// to the client through the `__switchboardEmit` binding. Also hides `navigator.webdriver`.
    static let bridge = """
    (function () {
      try { Object.defineProperty(Navigator.prototype, "webdriver", { get: function () { return false; }, configurable: true }); } catch (e) {}
      if (window.__switchboard) { return; }
      var send = window.__switchboardEmit;
      Object.defineProperty(window, "__switchboard", { value: { emit: function (event) {
        try { send(JSON.stringify(event)); } catch (e) {}
      } }, enumerable: false });
    })();
    """

    /// Actionability (as Playwright checks it): attached, visible, stable over two animation
    /// frames, enabled when asked; then scrolled into view and, when asked, the element (not
    /// something over it) is what a pointer at its centre would hit. Answers `{s, x, y}` with
    /// `s` one of ok, detached, hidden, unstable, disabled, obscured.
    static let actionable = """
    async function (wantEnabled, wantHit) {
      const el = this;
      if (!el.isConnected) return { s: "detached" };
      const box = (e) => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
      const visible = (e) => {
        const r = e.getBoundingClientRect(); const st = getComputedStyle(e);
        return r.width > 0 && r.height > 0 && st.visibility !== "hidden" && st.display !== "none" && st.opacity !== "0";
      };
      if (!visible(el)) return { s: "hidden" };
      if (wantEnabled && (el.disabled || el.getAttribute("aria-disabled") === "true" || el.closest("fieldset:disabled"))) return { s: "disabled" };
      el.scrollIntoView({ block: "center", inline: "center", behavior: "instant" });
      const before = box(el);
      await new Promise((f) => requestAnimationFrame(() => requestAnimationFrame(f)));
      const after = box(el);
      if (before.join() !== after.join()) return { s: "unstable" };
      const x = after[0] + after[2] / 2, y = after[1] + after[3] / 2;
      if (wantHit) {
        let hit = document.elementFromPoint(x, y);
        // Inside shadow trees, follow the hit down to the innermost element.
        while (hit && hit.shadowRoot) { const inner = hit.shadowRoot.elementFromPoint(x, y); if (!inner || inner === hit) break; hit = inner; }
        if (!hit || !(hit === el || el.contains(hit))) {
          const by = hit ? hit.tagName.toLowerCase() + (hit.id ? "#" + hit.id : "") : "nothing";
          return { s: "obscured", by: by };
        }
      }
      return { s: "ok", x: x, y: y };
    }
    """

    /// The state of an element for `waitForSelector` and selector conditions.
    static let state = """
    function () {
      const el = this;
      if (!el || !el.isConnected) return "detached";
      const r = el.getBoundingClientRect(); const st = getComputedStyle(el);
      return (r.width > 0 && r.height > 0 && st.visibility !== "hidden" && st.display !== "none") ? "visible" : "hidden";
    }
    """

    /// Prepares `fill`: focuses the field and selects its content (Playwright's fill), or says why not.
    static let prepareFill = """
    function () {
      const el = this;
      if (el instanceof HTMLInputElement) {
        const t = (el.type || "text").toLowerCase();
        if (["checkbox", "radio", "file", "submit", "button", "image", "reset", "range", "color", "hidden"].includes(t)) return "error:an input of type " + t + " cannot be filled";
        if (el.readOnly) return "error:the input is read-only";
        el.focus(); el.select(); return "ok";
      }
      if (el instanceof HTMLTextAreaElement) { if (el.readOnly) return "error:the textarea is read-only"; el.focus(); el.select(); return "ok"; }
      if (el.isContentEditable) {
        el.focus(); const range = document.createRange(); range.selectNodeContents(el);
        const s = window.getSelection(); s.removeAllRanges(); s.addRange(range); return "ok";
      }
      return "error:the element is not an <input>, <textarea> or [contenteditable]";
    }
    """

    /// `select`: chooses options by value (or label), fires input and change.
    static let select = """
    function (values) {
      const el = this;
      if (!(el instanceof HTMLSelectElement)) return { error: "the element is not a <select>" };
      const options = Array.from(el.options);
      const wanted = el.multiple ? values : values.slice(0, 1);
      const missing = wanted.filter((v) => !options.some((o) => o.value === v || o.label === v));
      if (missing.length) return { error: "no option with value " + JSON.stringify(missing[0]) };
      for (const o of options) o.selected = wanted.includes(o.value) || wanted.includes(o.label);
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
      return { selected: options.filter((o) => o.selected).map((o) => o.value) };
    }
    """

    /// `evaluate`: the worker's body as an async function; the value by JSON, a description of
    /// what JSON cannot carry, a preview of what is over 8 KB.
    static func evaluate(_ body: String) -> String {
        """
        (async () => {
          const v = await (async function () {
        \(body)
          })();
          if (v === undefined) return { type: "undefined" };
          const t = v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
          if (t === "function" || t === "symbol" || t === "bigint") return { type: t, description: String(v) };
          if (typeof Node !== "undefined" && v instanceof Node) return { type: "node", description: v.nodeName + (v.id ? "#" + v.id : "") };
          if (v === window) return { type: "object", description: "Window" };
          let s;
          try { s = JSON.stringify(v); } catch (e) { return { type: t, description: String(e && e.message || e) }; }
          if (s === undefined) return { type: t, description: String(v) };
          if (s.length > 8192) return { type: t, truncated: true, preview: s.slice(0, 8192) };
          return { type: t, value: JSON.parse(s) };
        })()
        """
    }

    /// The page (or the element) as Markdown, without navigation, footer, asides, hidden and
    /// fixed elements.
    static let markdown = """
    function () {
      const skip = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "SVG", "NAV", "FOOTER", "ASIDE", "IFRAME", "CANVAS", "HEAD", "DIALOG"]);
      const text = (s) => s.replace(/\\s+/g, " ");
      const walk = (n) => {
        if (n.nodeType === 3) return text(n.textContent);
        if (n.nodeType !== 1) return "";
        const el = n, tag = el.tagName;
        if (skip.has(tag)) return "";
        const role = el.getAttribute("role");
        if (role === "navigation" || role === "contentinfo" || role === "complementary" || el.getAttribute("aria-hidden") === "true") return "";
        const st = getComputedStyle(el);
        if (st.display === "none" || st.visibility === "hidden" || st.position === "fixed") return "";
        const inner = () => Array.from(el.childNodes).map(walk).join("");
        switch (tag) {
          case "H1": case "H2": case "H3": case "H4": case "H5": case "H6": {
            const t = inner().trim(); return t ? "\\n\\n" + "#".repeat(+tag[1]) + " " + t + "\\n\\n" : "";
          }
          case "P": case "DIV": case "SECTION": case "ARTICLE": case "MAIN": case "HEADER": case "FORM": case "FIELDSET":
            return "\\n\\n" + inner().trim() + "\\n\\n";
          case "BR": return "\\n";
          case "HR": return "\\n\\n---\\n\\n";
          case "A": { const t = inner().trim(); const h = el.getAttribute("href");
            return t ? (h && !h.startsWith("javascript:") ? "[" + t + "](" + el.href + ")" : t) : ""; }
          case "STRONG": case "B": { const t = inner().trim(); return t ? "**" + t + "**" : ""; }
          case "EM": case "I": { const t = inner().trim(); return t ? "*" + t + "*" : ""; }
          case "CODE": return "`" + el.textContent + "`";
          case "PRE": return "\\n\\n```\\n" + el.textContent + "\\n```\\n\\n";
          case "LI": return "\\n- " + inner().trim();
          case "UL": case "OL": return "\\n" + inner() + "\\n";
          case "IMG": { const a = el.getAttribute("alt"); return a ? "![" + a + "](" + el.src + ")" : ""; }
          case "INPUT": {
            const t = (el.type || "text").toLowerCase();
            if (t === "hidden") return "";
            if (t === "submit" || t === "button") return " [" + (el.value || t) + "] ";
            return " [" + (el.getAttribute("aria-label") || el.placeholder || el.name || t) + "] ";
          }
          case "BUTTON": return " [" + inner().trim() + "] ";
          case "TABLE": {
            const rows = Array.from(el.rows).map((r) => "| " + Array.from(r.cells).map((c) => text(c.innerText).trim()).join(" | ") + " |");
            if (!rows.length) return "";
            const cols = el.rows[0].cells.length;
            rows.splice(1, 0, "|" + " --- |".repeat(cols));
            return "\\n\\n" + rows.join("\\n") + "\\n\\n";
          }
          default: return inner();
        }
      };
      return walk(this).replace(/[ \\t]+\\n/g, "\\n").replace(/\\n[ \\t]+/g, "\\n").replace(/\\n{3,}/g, "\\n\\n").trim();
    }
    """
}
