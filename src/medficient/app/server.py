"""The FastAPI app: JSON endpoints under /api, the page under /.

Every session (browser tab) lives under /api/s/{sid}. Paths from the page are always
relative to the data folder and are refused if they resolve outside it.
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .scan import SAVE_FORMATS, ScanError, open_scan, save_labels, set_preset
from .segment import EnginePool, box_mask, check_box, plane_to_volume, slice_embedding, start_propagation
from .state import SegObject, Session, SessionStore, StateError

log = logging.getLogger("medficient.app")
STATIC = Path(__file__).parent / "static"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,199}$")


@dataclass
class AppConfig:
    data_dir: Path
    max_upload_bytes: int = 512 * 1024**2
    pool: EnginePool = field(default_factory=EnginePool)
    default_model: str = "lite_medsam"


# -- request bodies -------------------------------------------------------------------------------
class PlaneRef(BaseModel):
    axis: int = Field(0, ge=0, le=2)
    index: int = Field(..., ge=0)
    model: str | None = None


class BoxIn(PlaneRef):
    box: tuple[float, float, float, float]
    label: int = 1


class BoxEdit(BaseModel):
    box: tuple[float, float, float, float]
    model: str | None = None
    index: int | None = Field(None, ge=0)  # correct only this slice of a propagated object


class PropagateIn(BaseModel):
    first: int
    last: int
    model: str | None = None


class LabelIn(BaseModel):
    name: str | None = Field(None, max_length=64)
    color: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$")


class OpenIn(BaseModel):
    path: str


class PresetIn(BaseModel):
    preset: str = Field(..., max_length=64)
    window: tuple[float, float] | None = None  # (width, level) for a custom window


class SaveIn(BaseModel):
    format: str = Field(..., pattern=r"^(npz|png|nifti|nrrd)$")
    path: str | None = None


def resolve_in(root: Path, rel: str) -> Path:
    """`rel` inside `root` (symlinks followed), or a 400: the app never leaves its data folder."""
    if not rel or "\x00" in rel or Path(rel).is_absolute():
        raise HTTPException(400, f"{rel!r}: give a path relative to the data folder")
    root = root.resolve()
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise HTTPException(400, f"{rel!r}: cannot be resolved ({e.__class__.__name__})") from None
    if path != root and root not in path.parents:
        raise HTTPException(400, f"{rel!r} is outside the data folder")
    return path


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise HTTPException(500, "could not encode PNG")
    return buf.tobytes()


def overlay_rgba(labels: np.ndarray, session: Session) -> np.ndarray:
    """Label plane -> RGBA, each label in its colour, background transparent."""
    lut = np.zeros((int(labels.max(initial=0)) + 1, 4), dtype=np.uint8)
    for value, label in session.labels.items():
        if value < len(lut):
            lut[value] = [int(label.color[i : i + 2], 16) for i in (1, 3, 5)] + [255]
    return lut[labels]


def create_app(config: AppConfig) -> FastAPI:
    app = FastAPI(title="medficient", docs_url=None, redoc_url=None)
    store = SessionStore()
    data_dir = config.data_dir.resolve()
    app.state.config, app.state.store = config, store

    # -- errors become one readable line in the page ---------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg', '')}" for e in exc.errors()]
        return JSONResponse({"detail": "bad request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {str(exc)[:200]}"}, status_code=500)

    def rel_path(path: Path) -> str:
        """Data-folder-relative POSIX path ("" for the folder itself), as the page sends it back."""
        rel = path.relative_to(data_dir).as_posix()
        return "" if rel == "." else rel

    def session_of(sid: str) -> Session:
        try:
            return store.get(sid)
        except KeyError:
            raise HTTPException(404, "this tab's session has expired: reload the page") from None

    def model_of(name: str | None) -> tuple[str, object]:
        name = name or config.default_model
        try:
            return name, config.pool.get(name)
        except ValueError as e:
            raise HTTPException(400, str(e).splitlines()[0]) from e
        except (OSError, RuntimeError) as e:  # weights missing or unreadable
            raise HTTPException(503, f"model {name} could not be loaded: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

    def guarded(fn, *args, **kw):
        """Run `fn`, turning bad-input errors into 400 and a running job into 409."""
        try:
            return fn(*args, **kw)
        except (ScanError, StateError, ValueError) as e:
            raise HTTPException(400, str(e)) from e
        except RuntimeError as e:
            raise HTTPException(409, str(e)) from e

    # -- page, config, sessions ------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    def get_config() -> dict:
        return {
            "models": config.pool.names,
            "default_model": config.default_model,
            "backend": config.pool.backend,
            "precision": config.pool.precision,
            "max_upload_mb": round(config.max_upload_bytes / 1024**2, 1),
            "data_dir": data_dir.name,
        }

    @app.post("/api/sessions")
    def new_session() -> dict:
        return store.create().summary()

    @app.get("/api/s/{sid}")
    def get_session(sid: str) -> dict:
        return session_of(sid).summary()

    @app.delete("/api/s/{sid}")
    def drop_session(sid: str) -> dict:
        session_of(sid)
        store.drop(sid)
        return {"dropped": sid}

    # -- files -----------------------------------------------------------------------------------
    @app.get("/api/files")
    def list_files(dir: str = Query("", max_length=1000)) -> dict:
        folder = resolve_in(data_dir, dir) if dir else data_dir
        if not folder.is_dir():
            raise HTTPException(404, f"{dir!r}: no such folder")
        entries = []
        for p in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
            try:
                real = p.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                continue
            if p.name.startswith(".") or data_dir not in real.parents:
                continue  # hidden files and links out of the data folder are not offered
            entries.append({"name": p.name, "path": rel_path(real), "dir": p.is_dir(), "size": p.stat().st_size if p.is_file() else None})
        parent = rel_path(folder.parent) if folder != data_dir else None
        return {"dir": rel_path(folder), "parent": parent, "entries": entries}

    @app.post("/api/s/{sid}/upload")
    async def upload(sid: str, request: Request, name: str = Query(...), batch: str | None = Query(None)) -> dict:
        """Raw body upload into uploads/<batch>/<name>; several files (a DICOM series) share a batch."""
        session_of(sid)
        if not SAFE_NAME.match(name) or name != Path(name).name:
            raise HTTPException(400, f"{name!r}: not an acceptable file name")
        batch = batch or secrets.token_hex(6)
        if not re.fullmatch(r"[0-9a-f]{12}", batch):
            raise HTTPException(400, "bad upload batch id")
        folder = resolve_in(data_dir, f"uploads/{batch}")
        used = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
        limit = config.max_upload_bytes - used
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"{name}: larger than the upload limit of {config.max_upload_bytes / 1024**2:.0f} MB")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        tmp = folder / f".{name}.{secrets.token_hex(4)}.part"
        size = 0
        try:
            with tmp.open("wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"{name}: larger than the upload limit of {config.max_upload_bytes / 1024**2:.0f} MB")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(400, f"{name}: empty file")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": rel_path(target), "folder": rel_path(folder), "batch": batch, "bytes": size}

    @app.post("/api/s/{sid}/open")
    def open_file(sid: str, body: OpenIn) -> dict:
        session = session_of(sid)
        path = resolve_in(data_dir, body.path)
        scan = guarded(open_scan, path)
        with session.lock:
            if session.job and session.job.running:
                session.job.cancel()
            session.set_scan(scan)
        return session.summary()

    @app.post("/api/s/{sid}/preset")
    def change_preset(sid: str, body: PresetIn) -> dict:
        """Show and segment the image with another intensity preset (masks already drawn stay)."""
        session = session_of(sid)
        scan = guarded(session.require_scan)
        with session.lock:
            if session.job and session.job.running:
                raise HTTPException(409, "wait for the propagation to finish (or cancel it) before changing the intensity")
            guarded(set_preset, scan, body.preset, body.window)
            session.scan_version += 1
            session.embeddings = None
        return session.summary()

    @app.get("/api/download")
    def download(path: str = Query(..., max_length=1000)) -> FileResponse:
        target = resolve_in(data_dir, path)
        if not target.is_file():
            raise HTTPException(404, f"{path!r}: no such file")
        return FileResponse(target, filename=target.name)

    # -- slices and overlays ---------------------------------------------------------------------
    @app.get("/api/s/{sid}/slice/{axis}/{index}.png")
    def slice_png(sid: str, axis: int, index: int) -> Response:
        scan = guarded(session_of(sid).require_scan)
        plane = guarded(scan.plane, axis, index)
        return Response(png_bytes(plane), media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @app.get("/api/s/{sid}/overlay/{axis}/{index}.png")
    def overlay_png(sid: str, axis: int, index: int) -> Response:
        session = session_of(sid)
        scan = guarded(session.require_scan)
        guarded(scan.check_plane, axis, index)
        rgba = overlay_rgba(session.label_plane(axis, index), session)
        return Response(png_bytes(rgba), media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    # -- segmentation ----------------------------------------------------------------------------
    @app.post("/api/s/{sid}/embed")
    def embed(sid: str, body: PlaneRef) -> dict:
        """Encode the shown slice now, so the first box on it only needs the decoder. A request
        overtaken by a newer one of the same tab while it waited is skipped."""
        session = session_of(sid)
        name, engine = model_of(body.model)
        with session.lock:
            session.embed_requests += 1
            ticket = session.embed_requests
        t0 = time.perf_counter()
        embedding, _, cached = guarded(slice_embedding, session, engine, name, body.axis, body.index,
                                       stale=lambda: session.embed_requests != ticket)
        return {"cached": cached, "skipped": embedding is None, "seconds": round(time.perf_counter() - t0, 4)}

    def segment_box(session: Session, model: str | None, axis: int, index: int, box) -> tuple[str, tuple, np.ndarray, dict]:
        name, engine = model_of(model)
        scan = guarded(session.require_scan)
        guarded(scan.check_plane, axis, index)
        box = guarded(check_box, box, scan.plane(axis, index).shape[:2])
        t0 = time.perf_counter()
        embedding, geom, cached = guarded(slice_embedding, session, engine, name, axis, index)
        t1 = time.perf_counter()
        mask = box_mask(engine, embedding, geom, box)
        t2 = time.perf_counter()
        full = plane_to_volume(mask, scan.shape, axis, index)
        return name, box, full, {"embedding_cached": cached, "encode_s": round(t1 - t0, 4), "decode_s": round(t2 - t1, 4)}

    @app.post("/api/s/{sid}/objects")
    def add_object(sid: str, body: BoxIn) -> dict:
        session = session_of(sid)
        guarded(session.require_scan)
        if body.label not in session.labels:
            raise HTTPException(400, f"no label {body.label}")
        name, box, full, timing = segment_box(session, body.model, body.axis, body.index, body.box)
        obj = SegObject.from_full(full, id=session.new_object_id(), label=body.label, axis=body.axis, index=body.index, box=box, model=name)
        guarded(session.add_object, obj)
        return {**session.summary(), "object": obj.summary(), "timing": timing}

    @app.put("/api/s/{sid}/objects/{oid}")
    def edit_object(sid: str, oid: int, body: BoxEdit) -> dict:
        """A moved or resized box: segment its slice again (a propagated object becomes 2D again).
        With `index`: a correction box on that slice of a propagated object, which replaces the
        object's mask on that slice only (the refinement the published plugin lacks)."""
        session = session_of(sid)
        old = guarded(session.get_object, oid)
        if session.job and session.job.running and session.job.object_id == oid:
            raise HTTPException(409, f"object {oid} is being propagated: wait for it (or cancel it) first")
        if body.index is None:
            name, box, full, timing = segment_box(session, body.model, old.axis, old.index, body.box)
            obj = SegObject.from_full(full, id=oid, label=old.label, axis=old.axis, index=old.index, box=box, model=name)
        else:
            if old.span is None or not old.span[0] <= body.index <= old.span[1]:
                where = f"{old.span[0]}..{old.span[1]}" if old.span else f"only {old.index}: propagate it first"
                raise HTTPException(400, f"slice {body.index} is not a propagated slice of object {oid} ({where})")
            _, _, plane, timing = segment_box(session, body.model, old.axis, body.index, body.box)
            full = old.full(session.require_scan().shape)
            at = tuple(body.index if k == old.axis else slice(None) for k in range(3))
            full[at] = plane[at]
            obj = SegObject.from_full(full, id=oid, label=old.label, axis=old.axis, index=old.index, box=old.box,
                                      model=old.model, span=old.span)
        if not session.replace_object(obj):
            raise HTTPException(404, f"no object {oid}")
        return {**session.summary(), "object": obj.summary(), "timing": timing}

    @app.delete("/api/s/{sid}/objects/{oid}")
    def delete_object(sid: str, oid: int) -> dict:
        session = session_of(sid)
        guarded(session.delete_object, oid)
        return session.summary()

    @app.post("/api/s/{sid}/undo")
    def undo(sid: str) -> dict:
        session = session_of(sid)
        if not session.undo():
            raise HTTPException(400, "nothing to undo")
        return session.summary()

    # -- propagation -----------------------------------------------------------------------------
    @app.post("/api/s/{sid}/objects/{oid}/propagate")
    def propagate(sid: str, oid: int, body: PropagateIn) -> dict:
        session = session_of(sid)
        obj = guarded(session.get_object, oid)
        name, engine = model_of(body.model)
        job = guarded(start_propagation, session, engine, name, obj, body.first, body.last)
        return job.status()

    @app.get("/api/s/{sid}/job")
    def job_status(sid: str) -> dict:
        session = session_of(sid)
        if session.job is None:
            raise HTTPException(404, "no propagation in this tab")
        return {**session.job.status(), "edit_version": session.edit_version}

    @app.post("/api/s/{sid}/job/cancel")
    def job_cancel(sid: str) -> dict:
        session = session_of(sid)
        if session.job is None or not session.job.running:
            raise HTTPException(400, "no propagation is running")
        session.job.cancel()
        return session.job.status()

    # -- labels ----------------------------------------------------------------------------------
    @app.post("/api/s/{sid}/labels")
    def add_label(sid: str, body: LabelIn = Body(default_factory=LabelIn)) -> dict:
        session = session_of(sid)
        guarded(session.require_scan)
        label = guarded(session.add_label, body.name, body.color)
        return {**session.summary(), "label": label.as_dict()}

    @app.patch("/api/s/{sid}/labels/{value}")
    def edit_label(sid: str, value: int, body: LabelIn) -> dict:
        session = session_of(sid)
        guarded(session.edit_label, value, body.name, body.color)
        return session.summary()

    @app.delete("/api/s/{sid}/labels/{value}")
    def delete_label(sid: str, value: int) -> dict:
        session = session_of(sid)
        guarded(session.delete_label, value)
        return session.summary()

    # -- saving ----------------------------------------------------------------------------------
    @app.post("/api/s/{sid}/save")
    def save(sid: str, body: SaveIn) -> dict:
        session = session_of(sid)
        scan = guarded(session.require_scan)
        suffix = SAVE_FORMATS[body.format]
        rel = body.path or f"segmentations/{_stem(scan.name)}_labels{suffix}"
        if not rel.lower().endswith((suffix, ".nii") if body.format == "nifti" else suffix):
            raise HTTPException(400, f"{rel}: a {body.format} file name ends with {suffix}")
        target = resolve_in(data_dir, rel)
        if scan.source is not None and target == scan.source.resolve():
            raise HTTPException(400, f"{rel}: that is the opened image; choose another name")
        if target.is_dir():
            raise HTTPException(400, f"{rel}: is a folder")
        with session.lock:
            objects = session.objects
        guarded(save_labels, target, body.format, scan, session.label_map(objects), objects)
        path = rel_path(target)
        return {"path": path, "download": f"/api/download?path={path}"}

    return app


def _stem(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".npz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
