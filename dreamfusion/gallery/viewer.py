"""The vendored 3D viewer (@google/model-viewer, see vendor/README.md) and how a page embeds a GLB.

The pages inline the viewer and the GLB bytes: browsers refuse fetch() and module scripts from
file:// pages, so a page that loaded either from a file beside it would not open offline.
"""
from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

VENDOR = Path(__file__).with_name("vendor")
VIEWER_FILE = VENDOR / "model-viewer-umd.min.js"
VIEWER_VERSION = "4.4.0"
VIEWER_SHA256 = "d785423b1d046ea84a9f59ef6cf15f3077603e1bf938b01ced9b0240691884a2"


@functools.lru_cache(maxsize=1)
def viewer_script() -> str:
    """The model-viewer bundle's text, checked against the vendored release's hash."""
    data = VIEWER_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != VIEWER_SHA256:
        raise RuntimeError(f"{VIEWER_FILE} is not model-viewer {VIEWER_VERSION} as vendored; restore it (vendor/README.md)")
    return data.decode("utf-8").replace("</script", "<\\/script")  # cannot close the inline <script> early


def glb_payload(path: Path) -> str:
    """A GLB as base64, for a <script type="application/octet-stream"> block the page decodes."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


# Decodes each embedded GLB into a blob: URL and gives it to its <model-viewer>; the buttons switch
# between the stages' meshes. Errors go to the console, where the browser test looks for them.
VIEWER_BOOT = """
for (const viewer of document.querySelectorAll("model-viewer[data-glb]")) {
  const urls = {};
  const show = (name) => {
    if (!urls[name]) {
      const text = document.getElementById(name).textContent.trim();
      const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
      urls[name] = URL.createObjectURL(new Blob([bytes], {type: "model/gltf-binary"}));
    }
    viewer.src = urls[name];
    for (const b of document.querySelectorAll("button[data-glb]")) b.classList.toggle("on", b.dataset.glb === name);
  };
  viewer.addEventListener("load", () => { viewer.dataset.loaded = "yes"; });
  viewer.addEventListener("error", (e) => console.error("the 3D viewer could not show the mesh", e.detail));
  for (const b of document.querySelectorAll("button[data-glb]")) b.addEventListener("click", () => show(b.dataset.glb));
  show(viewer.dataset.glb);
}
"""
