/* Starts Swagger UI on the agent's own OpenAPI document. A file, not an inline script: the page's CSP allows
   scripts from 'self' only. "Try it out" sends the session's CSRF token on writes, as the admin pages do. */
"use strict";
(async function () {
  let csrf = null;
  try {
    const response = await fetch("/api/auth/me", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.ok) csrf = (await response.json()).csrf;
  } catch (e) {
    console.error(e);
  }
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // no call to an online validator: the store may be offline, and the spec is ours
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: (request) => {
      if (csrf && request.method && request.method.toUpperCase() !== "GET") request.headers["X-CSRF-Token"] = csrf;
      return request;
    },
  });
})();
