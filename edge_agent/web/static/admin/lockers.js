/* The lockers page (being built: see the work in progress). */
"use strict";
Edge.page(async (app) => {
  app.append(Edge.el("h1", {}, Edge.t("nav_lockers")));
});
