// The Review page's image viewer: a Streamlit components.v2 module (plain JavaScript, no build).
//
// It shows the image by URL once and draws every object's outline, fill and number over it as
// SVG vectors. Streamlit calls the default export again with new data after every rerun, on the
// same element (the component is keyed by the image), so the view (zoom and pan) is kept here
// and survives verdicts; it resets when `data.view` names another image.
//
// Mouse: wheel zooms about the pointer, drag pans, a click on an object picks it (sends the
// `pick` trigger with its label), double-click fits the image. The buttons under the image do
// the same for touch screens, and never cover an object.
//
// data = {view, url, width, height, fill, numbers, number_color, picked,
//         styles: {state: colour}, objects: [[label, col, row, pathD, state], ...],
//         extra: [[pathD, colour, dashed], ...]}

const VIEWERS = new WeakMap();
const SVG = "http://www.w3.org/2000/svg";
const MIN_SPAN = 16; // the closest zoom shows 16 image pixels across

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let viewer = VIEWERS.get(parentElement);
  if (!viewer) {
    viewer = createViewer(parentElement);
    VIEWERS.set(parentElement, viewer);
  }
  viewer.pick = (label) => setTriggerValue("pick", label);
  viewer.update(data || {});
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

const CSS = `
.ct-viewer { width: 100%; }
.ct-viewer .ct-stage { width: 100%; max-height: 72vh; background: #000; overflow: hidden;
  border-radius: 0.5rem; }
.ct-viewer svg { display: block; width: 100%; height: 100%; touch-action: none; cursor: grab;
  user-select: none; -webkit-user-select: none; }
.ct-viewer.ct-dragging svg { cursor: grabbing; }
.ct-viewer .ct-shapes path, .ct-viewer .ct-numbers text { cursor: pointer; }
.ct-viewer .ct-numbers text { text-anchor: middle; dominant-baseline: central; font-weight: 600;
  font-family: sans-serif; paint-order: stroke; stroke: rgba(0, 0, 0, 0.85); stroke-width: 3px;
  vector-effect: non-scaling-stroke; }
.ct-viewer .ct-tools { display: flex; justify-content: flex-end; gap: 4px; margin-top: 4px; }
.ct-viewer .ct-tools button { min-width: 2.2rem; height: 2rem; border-radius: 0.4rem;
  cursor: pointer; border: 1px solid rgba(128, 128, 128, 0.5); background: transparent;
  color: inherit; font-size: 1rem; line-height: 1; padding: 0 0.5rem; }
`;

function createViewer(root) {
  const box = document.createElement("div");
  box.className = "ct-viewer";
  box.setAttribute("data-testid", "ctReviewViewer");
  const style = document.createElement("style");
  style.textContent = CSS; // class names are prefixed, so nothing else on the page is styled
  box.appendChild(style);
  const stage = document.createElement("div");
  stage.className = "ct-stage";
  box.appendChild(stage);
  const svg = el("svg", { preserveAspectRatio: "xMidYMid meet" });
  stage.appendChild(svg);
  const image = el("image", { x: 0, y: 0, preserveAspectRatio: "none" }, svg);
  const shapes = el("g", { class: "ct-shapes" }, svg);
  const extra = el("g", { class: "ct-extra", "pointer-events": "none" }, svg);
  const picked = el("g", { class: "ct-picked" }, svg);
  const numbers = el("g", { class: "ct-numbers" }, svg);
  const tools = document.createElement("div");
  tools.className = "ct-tools";
  for (const [name, title] of [["+", "Zoom in"], ["−", "Zoom out"], ["⤢", "Fit the image"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name;
    b.title = title;
    b.setAttribute("aria-label", title);
    tools.appendChild(b);
  }
  box.appendChild(tools);
  root.appendChild(box);

  const v = { key: null, view: null, size: [1, 1], pick: () => {} };

  function scale() {
    const ctm = svg.getScreenCTM();
    return ctm ? ctm.a : 1; // screen px per image px
  }

  function apply() {
    const { x, y, w, h } = v.view;
    svg.setAttribute("viewBox", `${x} ${y} ${w} ${h}`);
    const s = scale();
    numbers.setAttribute("font-size", (13 / s).toFixed(3));
  }

  function clamp(view) {
    const [W, H] = v.size;
    const w = Math.min(Math.max(view.w, MIN_SPAN), W);
    const h = (w * H) / W;
    const x = Math.min(Math.max(view.x, -w / 2), W - w / 2);
    const y = Math.min(Math.max(view.y, -h / 2), H - h / 2);
    return { x, y, w, h };
  }

  function zoom(factor, cx, cy) {
    const { x, y, w, h } = v.view;
    const px = cx ?? x + w / 2;
    const py = cy ?? y + h / 2;
    const nw = w / factor;
    const nh = h / factor;
    v.view = clamp({ x: px - ((px - x) * nw) / w, y: py - ((py - y) * nh) / h, w: nw, h: nh });
    apply();
  }

  function fit() {
    v.view = { x: 0, y: 0, w: v.size[0], h: v.size[1] };
    apply();
  }

  function toImage(evt) {
    const pt = svg.createSVGPoint();
    pt.x = evt.clientX;
    pt.y = evt.clientY;
    const ctm = svg.getScreenCTM();
    return ctm ? pt.matrixTransform(ctm.inverse()) : { x: 0, y: 0 };
  }

  svg.addEventListener("wheel", (evt) => {
    evt.preventDefault();
    const p = toImage(evt);
    zoom(Math.exp(-evt.deltaY * 0.0015), p.x, p.y);
  }, { passive: false });

  let drag = null;
  svg.addEventListener("pointerdown", (evt) => {
    if (evt.button !== 0) return;
    const target = evt.target.closest ? evt.target.closest("[data-label]") : null;
    drag = { id: evt.pointerId, x: evt.clientX, y: evt.clientY, view: { ...v.view }, moved: false,
             label: target ? Number(target.getAttribute("data-label")) : null };
  });
  svg.addEventListener("pointermove", (evt) => {
    if (!drag || evt.pointerId !== drag.id) return;
    const dx = evt.clientX - drag.x;
    const dy = evt.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    if (!drag.moved) {
      drag.moved = true;
      svg.setPointerCapture(evt.pointerId);
      box.classList.add("ct-dragging");
    }
    const s = scale();
    v.view = clamp({ ...drag.view, x: drag.view.x - dx / s, y: drag.view.y - dy / s });
    apply();
  });
  const end = (evt) => {
    if (!drag || evt.pointerId !== drag.id) return;
    if (!drag.moved && drag.label !== null && evt.type === "pointerup") v.pick(drag.label);
    box.classList.remove("ct-dragging");
    drag = null;
  };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
  svg.addEventListener("dblclick", fit);
  const [zoomIn, zoomOut, fitButton] = tools.querySelectorAll("button");
  zoomIn.addEventListener("click", () => zoom(1.5));
  zoomOut.addEventListener("click", () => zoom(1 / 1.5));
  fitButton.addEventListener("click", fit);
  // The numbers keep their size on screen when the element is resized.
  new ResizeObserver(() => v.view && apply()).observe(svg);

  v.update = (data) => {
    const W = Number(data.width) || 1;
    const H = Number(data.height) || 1;
    v.size = [W, H];
    stage.style.aspectRatio = `${W} / ${H}`;
    if (data.view !== v.key || !v.view) {
      v.key = data.view;
      v.view = { x: 0, y: 0, w: W, h: H };
    }
    if (image.getAttribute("href") !== data.url) image.setAttribute("href", data.url || "");
    image.setAttribute("width", W);
    image.setAttribute("height", H);
    const styles = data.styles || {};
    const fill = Number(data.fill) || 0;
    const parts = [];
    let pickedPath = "";
    for (const [label, , , d, state] of data.objects || []) {
      if (label === data.picked) pickedPath = d;
      const color = styles[state || ""] || "#00ffff";
      parts.push(`<path d="${d}" data-label="${label}" data-state="${state || ""}" stroke="${color}"`
        + ` fill="${color}" fill-opacity="${fill}" stroke-width="2.5"`
        + ` vector-effect="non-scaling-stroke" pointer-events="all"/>`);
    }
    shapes.innerHTML = parts.join("");
    picked.innerHTML = pickedPath
      ? `<path d="${pickedPath}" data-label="${data.picked}" stroke="${styles.picked || "#fff"}"`
        + ` fill="none" stroke-width="4" vector-effect="non-scaling-stroke"/>`
      : "";
    extra.innerHTML = (data.extra || []).map(([d, color, dashed]) =>
      `<path d="${d}" stroke="${color}" fill="none" stroke-width="2"`
      + `${dashed ? ' stroke-dasharray="4 3"' : ""} vector-effect="non-scaling-stroke"/>`).join("");
    numbers.setAttribute("fill", data.number_color || "#ffffff");
    numbers.innerHTML = data.numbers === false ? "" : (data.objects || []).map(([label, x, y]) =>
      `<text x="${x}" y="${y}" data-label="${label}">${label}</text>`).join("");
    apply();
  };
  return v;
}
