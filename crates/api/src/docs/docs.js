// Satchel API reference: renders /v1/openapi.json (OpenAPI 3.1) as a page. Self-contained: no
// libraries, no network access beyond the document itself. Builds DOM nodes with textContent
// only (never as markup), so the document's text cannot inject markup.
"use strict";

(function () {
  const METHODS = ["get", "post", "put", "patch", "delete"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function anchor(method, path) {
    return "op-" + method + "-" + path.replace(/[^A-Za-z0-9]+/g, "-");
  }

  function refName(ref) {
    return ref.split("/").pop();
  }

  function resolve(doc, schema) {
    let seen = 0;
    while (schema && schema.$ref && seen < 20) {
      const parts = schema.$ref.replace(/^#\//, "").split("/");
      schema = parts.reduce((o, p) => (o ? o[p.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), doc);
      seen += 1;
    }
    return schema || {};
  }

  function typeLabel(schema) {
    if (!schema) return "any";
    if (schema.$ref) return refName(schema.$ref);
    let t = schema.type;
    if (Array.isArray(t)) t = t.join(" | ");
    if (t === "array" && schema.items) return "array of " + typeLabel(schema.items);
    if (!t && schema.oneOf) return schema.oneOf.map(typeLabel).join(" | ");
    if (!t && schema.allOf) return schema.allOf.map(typeLabel).join(" & ");
    let label = t || "any";
    if (schema.format) label += " (" + schema.format + ")";
    if (schema.minimum !== undefined) label += " ≥ " + schema.minimum;
    return label;
  }

  // A schema as a nested list of properties; `depth` bounds recursion through $refs.
  function schemaTree(doc, schema, depth) {
    const list = el("ul", { class: "schema" });
    const s = resolve(doc, schema);
    const parts = s.allOf ? s.allOf.map((x) => resolve(doc, x)) : [s];
    let any = false;
    for (const part of parts) {
      const required = new Set(part.required || []);
      for (const [name, prop] of Object.entries(part.properties || {})) {
        any = true;
        const item = el(
          "li",
          {},
          el("span", { class: "prop" }, name),
          required.has(name) ? el("span", { class: "req" }, "required") : null,
          el("span", { class: "type" }, typeLabel(prop)),
          prop.description ? el("span", { class: "muted" }, " — " + prop.description) : null
        );
        const inner = resolveNested(doc, prop);
        if (inner && depth < 4) item.append(schemaTree(doc, inner, depth + 1));
        list.append(item);
      }
      if (part.type === "array" && part.items) {
        any = true;
        const item = el("li", {}, el("span", { class: "muted" }, "items: "), el("span", { class: "type" }, typeLabel(part.items)));
        if (depth < 4) item.append(schemaTree(doc, part.items, depth + 1));
        list.append(item);
      }
    }
    return any ? list : el("span");
  }

  // The object schema inside a property (directly, through a $ref, an array or a nullable oneOf).
  function resolveNested(doc, prop) {
    if (prop.$ref) return prop;
    if (prop.items && (prop.items.$ref || prop.items.properties)) return prop.items;
    for (const alt of prop.oneOf || []) if (alt.$ref || alt.properties) return alt;
    if (prop.properties) return prop;
    return null;
  }

  function examplesBlock(media) {
    const out = [];
    if (media.example !== undefined) {
      out.push(el("details", {}, el("summary", {}, "Example"), el("pre", {}, JSON.stringify(media.example, null, 2))));
    }
    for (const [name, ex] of Object.entries(media.examples || {})) {
      out.push(el("details", {}, el("summary", {}, "Example: " + (ex.summary || name)), el("pre", {}, JSON.stringify(ex.value, null, 2))));
    }
    return out;
  }

  function paramsTable(params) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "description")));
    for (const p of params) {
      table.append(
        el(
          "tr",
          {},
          el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "req" }, "required") : null),
          el("td", {}, p.in),
          el("td", {}, typeLabel(p.schema)),
          el("td", {}, p.description || "")
        )
      );
    }
    return table;
  }

  function securityText(doc, op) {
    const reqs = op.security !== undefined ? op.security : doc.security || [];
    if (reqs.length === 0 || reqs.some((r) => Object.keys(r).length === 0)) return "none";
    const schemes = (doc.components || {}).securitySchemes || {};
    return reqs
      .flatMap((r) => Object.keys(r))
      .map((name) => {
        const s = schemes[name] || {};
        if (s.type === "apiKey") return s.name + " (" + s.in + ")";
        if (s.type === "http") return "HTTP " + s.scheme;
        return name;
      })
      .join(" or ");
  }

  function operation(doc, method, path, op) {
    const art = el("article", { class: "op", id: anchor(method, path) });
    art.append(el("h3", {}, el("span", { class: "method " + method }, method), path));
    if (op.summary) art.append(el("p", {}, op.summary));
    if (op.description && op.description !== op.summary) art.append(el("p", {}, op.description));
    art.append(el("p", { class: "muted" }, "Key: " + securityText(doc, op)));
    if (op.parameters && op.parameters.length) {
      art.append(el("h4", {}, "Parameters"), paramsTable(op.parameters));
    }
    if (op.requestBody) {
      art.append(el("h4", {}, "Request body"));
      const types = Object.keys(op.requestBody.content || {});
      art.append(el("p", { class: "muted" }, types.join(" or ")));
      const first = op.requestBody.content[types[0]];
      if (first && first.schema) {
        art.append(el("p", {}, el("span", { class: "type" }, typeLabel(first.schema))), schemaTree(doc, first.schema, 0));
      }
    }
    art.append(el("h4", {}, "Responses"));
    for (const [status, resp0] of Object.entries(op.responses || {})) {
      const resp = resolve(doc, resp0);
      const box = el("details", {}, el("summary", {}, el("span", { class: "status s" + status[0] }, status), " " + (resp.description || "")));
      for (const [ctype, media] of Object.entries(resp.content || {})) {
        box.append(el("p", { class: "muted" }, ctype + ": ", el("span", { class: "type" }, typeLabel(media.schema))));
        if (media.schema) box.append(schemaTree(doc, media.schema, 0));
        box.append(...examplesBlock(media));
      }
      const headers = Object.entries(resp.headers || {});
      if (headers.length) {
        const ul = el("ul", {});
        for (const [name, h] of headers) ul.append(el("li", {}, el("code", {}, name), " — " + (h.description || "")));
        box.append(el("p", {}, "Headers:"), ul);
      }
      if (status[0] === "2") box.setAttribute("open", "");
      art.append(box);
    }
    return art;
  }

  function render(doc) {
    const info = doc.info || {};
    document.title = (info.title || "API") + " reference";
    document.getElementById("title").textContent = (info.title || "API") + " " + (info.version || "");
    const nav = document.getElementById("nav");
    const main = document.getElementById("main");
    main.replaceChildren();
    if (info.description) main.append(el("p", {}, info.description));
    main.append(el("p", { class: "muted" }, "OpenAPI " + doc.openapi));

    const tagOrder = (doc.tags || []).map((t) => t.name);
    const byTag = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([method, path, op]);
        if (!tagOrder.includes(tag)) tagOrder.push(tag);
      }
    }
    for (const tag of tagOrder) {
      const ops = byTag.get(tag);
      if (!ops) continue;
      const meta = (doc.tags || []).find((t) => t.name === tag) || {};
      nav.append(el("h2", {}, tag));
      const sec = el("section", { class: "tag", id: "tag-" + tag }, el("h2", {}, tag));
      if (meta.description) sec.append(el("p", { class: "muted" }, meta.description));
      for (const [method, path, op] of ops) {
        nav.append(el("a", { href: "#" + anchor(method, path) }, method.toUpperCase() + " " + path));
        sec.append(operation(doc, method, path, op));
      }
      main.append(sec);
    }

    const schemas = ((doc.components || {}).schemas) || {};
    nav.append(el("h2", {}, "schemas"));
    const sec = el("section", { class: "tag", id: "schemas" }, el("h2", {}, "Schemas"));
    for (const [name, schema] of Object.entries(schemas)) {
      nav.append(el("a", { href: "#schema-" + name }, name));
      const art = el("article", { class: "op", id: "schema-" + name }, el("h3", {}, name));
      if (schema.description) art.append(el("p", {}, schema.description));
      art.append(schemaTree(doc, schema, 0));
      sec.append(art);
    }
    main.append(sec);
    if (location.hash) {
      const target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
  }

  fetch("/v1/openapi.json", { headers: { Accept: "application/json" } })
    .then((r) => {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    })
    .then(render)
    .catch((e) => {
      const status = document.getElementById("status");
      status.className = "error";
      status.textContent = "Could not load /v1/openapi.json: " + e.message;
    });
})();
