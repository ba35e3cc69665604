// The API reference (/api/docs): Swagger UI over /api/v1/openapi.json, which needs a token
// like every /api/v1 path. The page signs in as the map does: a token from the form or from
// ?token= in the address (then removed from it) is traded for the session cookie
// (POST /api/v1/session), shared with the map and the crew page; no script keeps a token.
// A classic script (Swagger UI's bundle is one), loaded from a file: the page's CSP runs
// no inline script.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const form = document.getElementById("sign-in");
  const formError = document.getElementById("sign-in-error");
  const signOut = document.getElementById("sign-out");

  function tokenFromUrl() {
    const url = new URL(location.href);
    const token = url.searchParams.get("token");
    if (!token) return null;
    url.searchParams.delete("token"); // out of the history and of screenshots
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    return token.trim();
  }

  async function detailOf(resp) {
    try {
      return (await resp.json()).detail || `${resp.status} ${resp.statusText}`;
    } catch {
      return `${resp.status} ${resp.statusText}`; // not JSON
    }
  }

  // null when signed in, else the server's reason.
  async function signIn(token) {
    const resp = await fetch("/api/v1/session", {
      method: "POST", headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    });
    return resp.ok ? null : detailOf(resp);
  }

  function askForToken(reason) {
    formError.textContent = reason || "";
    form.hidden = false;
    signOut.hidden = true;
  }

  async function show(reason) {
    // Fetched here rather than by Swagger UI so a refused session brings back the form
    // with the server's own explanation (problem+json detail).
    const resp = await fetch("/api/v1/openapi.json", { headers: { Accept: "application/json" } });
    if (!resp.ok) {
      askForToken(resp.status === 401 ? reason : await detailOf(resp));
      return;
    }
    const spec = await resp.json();
    form.hidden = true;
    signOut.hidden = false;
    // "Try it out" goes with the session cookie, unless the Authorize dialog sets a token.
    window.ui = SwaggerUIBundle({ spec, dom_id: "#swagger", deepLinking: true, tryItOutEnabled: false });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const problem = await signIn(document.getElementById("token").value.trim());
    if (problem) askForToken(problem);
    else show("");
  });
  signOut.addEventListener("click", async () => {
    await fetch("/api/v1/session", { method: "DELETE" });
    document.getElementById("swagger").replaceChildren();
    askForToken("");
  });

  async function boot() {
    const token = tokenFromUrl();
    show(token ? await signIn(token) : "");
  }

  if (config.vendorMissing) {
    const note = document.getElementById("vendor-missing");
    note.textContent = config.vendorMissing;
    note.hidden = false;
  } else {
    boot();
  }
})();
