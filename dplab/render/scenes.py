"""Scenes to render: sharp images with depth, still or moving, that need no download.

* **Photos** bundled with scikit-image (:data:`BUNDLED_IMAGES`, all shipped inside the
  package, so they load offline): :func:`load_image`. Their values are used as they are
  (sRGB-encoded, like the SYNTHIA PNGs the RDPD generator blurs).
* **Generated depth** in metres: fronto-parallel bands (:func:`fronto_parallel_depth`), a
  slanted plane (:func:`slanted_plane_depth`; inverse depth is affine in image coordinates for
  any plane), and composed scenes with objects in front of a background (:class:`Scene`,
  :func:`objects_scene`, :func:`random_scene`).
* **Motion** for the recurrent network of RDPD (Sec. 4): :class:`Scene` moves its camera
  (pan with parallax ``~ 1/depth``, dolly forward) and its objects (image motion, depth
  motion with the matching change of size); :meth:`Scene.sequence` renders frames.

The street scenes RDPD renders (SYNTHIA-SF, Sec. 3) are read by :mod:`dplab.render.synthia`.

Every image is ``(1, 3, H, W)`` float32 in [0, 1] and every depth map ``(1, 1, H, W)`` float32
in metres (``(T, ...)`` for sequences); randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_number, require_positive

__all__ = [
    "BUNDLED_IMAGES", "COLOR_IMAGES", "SHAPES", "SYNTHIA_MAX_DEPTH_M", "SceneSample",
    "SceneObject", "Scene", "load_image", "fit_to_size", "fronto_parallel_depth",
    "slanted_plane_depth", "objects_scene", "random_scene",
]

#: Images of ``skimage.data`` that ship with scikit-image (no download); grey ones are
#: replicated to three channels.
BUNDLED_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                  "motorcycle", "retina", "hubble_deep_field", "camera", "moon", "brick",
                  "grass", "gravel", "coins", "clock", "page", "text", "cell")
#: Colour photos with detail everywhere, the default pool of :func:`random_scene`.
COLOR_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle")
#: Object outlines of :class:`SceneObject`.
SHAPES = ("ellipse", "rectangle", "diamond", "superellipse")
#: SYNTHIA-SF depth is clipped at this distance (the RDPD generator's ``threshold_dis``); also
#: the far clip of :class:`Scene` (:mod:`dplab.render.synthia` reads SYNTHIA-SF).
SYNTHIA_MAX_DEPTH_M = 250.0
_MIN_DEPTH_M = 0.05


class SceneSample(NamedTuple):
    """A sharp image ``(N, 3, H, W)`` and its depth in metres ``(N, 1, H, W)``."""

    image: torch.Tensor
    depth_m: torch.Tensor


def _size(size) -> tuple[int, int]:
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise TypeError(f"size must be (height, width), got {size!r}")
    h, w = (require_positive("size", v, integer=True) for v in size)
    return h, w


# ----------------------------------------------------------------------------- photos
@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    fn = "stereo_motorcycle" if name == "motorcycle" else name
    arr = getattr(skimage.data, fn)()
    if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
        arr = arr[0]
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12)
    arr.setflags(write=False)
    return arr


def _resize(x: torch.Tensor, size, mode="bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def _crop_to_aspect(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    if H * w > W * h:  # too tall
        ch = max(1, round(W * h / w))
        top = (H - ch) // 2
        return x[..., top:top + ch, :]
    cw = max(1, round(H * w / h))
    left = (W - cw) // 2
    return x[..., left:left + cw]


def load_image(name: str, size=None, *, device=None) -> torch.Tensor:
    """A photo bundled with scikit-image as a ``(1, 3, H, W)`` float32 tensor in [0, 1].

    Args:
        name: one of :data:`BUNDLED_IMAGES` (``"motorcycle"`` is the left image of
            ``skimage.data.stereo_motorcycle``).
        size: ``(H, W)``: centre-crop to that aspect ratio, then resize (antialiased
            bilinear); None keeps the original size.
        device: output device.

    Returns:
        The image.

    Shape:
        ``(1, 3, H, W)``.

    Raises:
        ValueError: unknown name, bad size.

    Example:
        >>> load_image("chelsea", (60, 80)).shape
        torch.Size([1, 3, 60, 80])
    """
    require_choice("name", name, BUNDLED_IMAGES)
    x = torch.from_numpy(np.array(_photo(name))).permute(2, 0, 1)[None]
    if size is not None:
        x = fit_to_size(x, size).clamp(0.0, 1.0)
    return x.contiguous().to(device)


def fit_to_size(x: torch.Tensor, size, *, mode: str = "bilinear") -> torch.Tensor:
    """Centre-crop ``x`` ``(N, C, H, W)`` to the aspect ratio of ``size`` = ``(h, w)``, then resize.

    ``mode``: ``"bilinear"`` (antialiased, for images) or ``"nearest"`` (for depth and label
    maps: no value is mixed across an edge).

    Example:
        >>> fit_to_size(torch.arange(12.0).reshape(1, 1, 3, 4), (3, 3), mode="nearest")[0, 0]
        tensor([[ 0.,  1.,  2.],
                [ 4.,  5.,  6.],
                [ 8.,  9., 10.]])
    """
    h, w = _size(size)
    return _resize(_crop_to_aspect(x, h, w), (h, w), mode)


# ----------------------------------------------------------------------------- depth maps
def fronto_parallel_depth(size, depths_m, *, axis: str = "x") -> torch.Tensor:
    """Depth map of equal bands, each a fronto-parallel plane at one depth.

    Args:
        size: ``(H, W)``.
        depths_m: depths in metres (> 0), one per band, from the left (``axis="x"``) or top
            (``axis="y"``).
        axis: ``"x"`` (vertical bands side by side) or ``"y"`` (horizontal bands).

    Returns:
        ``(1, 1, H, W)`` depth in metres.

    Raises:
        ValueError: empty or non-positive depths, bad axis or size.

    Example:
        >>> fronto_parallel_depth((2, 6), [1.0, 2.0, 4.0])[0, 0, 0].tolist()
        [1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    """
    h, w = _size(size)
    require_choice("axis", axis, ("x", "y"))
    d = [float(require_positive("depths_m", v)) for v in depths_m]
    if not d:
        raise ValueError("depths_m is empty")
    n = w if axis == "x" else h
    band = (torch.arange(n) * len(d)) // n
    vals = torch.tensor(d, dtype=torch.float32)[band]
    out = vals.reshape(1, -1).expand(h, w) if axis == "x" else vals.reshape(-1, 1).expand(h, w)
    return out.reshape(1, 1, h, w).contiguous()


def slanted_plane_depth(size, near_m: float, far_m: float, *,
                        far_side: str = "top") -> torch.Tensor:
    """Depth of a plane seen at an angle: a floor (far at the top) or a wall (far to a side).

    The inverse depth of a plane is affine in image coordinates, so ``1/d`` goes linearly
    from ``1/near_m`` at one edge (pixel centres) to ``1/far_m`` at the opposite one.

    Args:
        size: ``(H, W)``.
        near_m: depth at the near edge (> 0).
        far_m: depth at the far edge (> 0; may be smaller than ``near_m``).
        far_side: ``"top"``, ``"bottom"``, ``"left"`` or ``"right"``.

    Returns:
        ``(1, 1, H, W)`` depth in metres.

    Raises:
        ValueError: non-positive depths, bad side or size.

    Example:
        >>> d = slanted_plane_depth((3, 2), 1.0, 4.0)
        >>> d[0, 0, :, 0].tolist()
        [4.0, 1.600000023841858, 1.0]
    """
    h, w = _size(size)
    near = float(require_positive("near_m", near_m))
    far = float(require_positive("far_m", far_m))
    require_choice("far_side", far_side, ("top", "bottom", "left", "right"))
    n = h if far_side in ("top", "bottom") else w
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    if far_side in ("top", "left"):
        t = 1.0 - t
    d = (1.0 / (1.0 / near + t * (1.0 / far - 1.0 / near))).float()
    vertical = far_side in ("top", "bottom")
    out = d.reshape(-1, 1).expand(h, w) if vertical else d.reshape(1, -1).expand(h, w)
    return out.reshape(1, 1, h, w).contiguous()


# ----------------------------------------------------------------------------- scenes
@dataclass
class SceneObject:
    """A flat, fronto-parallel object pasted in front of the background.

    Args:
        texture: its appearance ``(1, 3, h, w)``, stretched over the object's box.
        center_px: ``(x, y)`` of its centre at frame 0, pixels.
        size_px: ``(width, height)`` at frame 0, pixels.
        depth_m: depth at frame 0, metres.
        shape: one of :data:`SHAPES`.
        velocity_px: image motion ``(vx, vy)`` per frame.
        depth_velocity_m: depth change per frame (negative: approaching); the object's size
            scales as ``1 / depth``.
    """

    texture: torch.Tensor
    center_px: tuple[float, float]
    size_px: tuple[float, float]
    depth_m: float
    shape: str = "ellipse"
    velocity_px: tuple[float, float] = (0.0, 0.0)
    depth_velocity_m: float = 0.0


@dataclass
class Scene:
    """A background plane and objects, seen by a camera that may move (RDPD Sec. 4 sequences).

    The background texture is sampled with reflection beyond its edges, so any camera motion
    is defined. The background is the plane with inverse depth
    ``1/d = inv_depth[0] + inv_depth[1] u + inv_depth[2] v`` (1/m), ``u, v`` the pixel's
    offsets from the image centre in units of the width and height (``v`` down).

    Args:
        size: ``(H, W)`` of the rendered frames.
        background: ``(1, 3, Hb, Wb)`` texture, resized (stretched) to the frame size.
        inv_depth: background plane coefficients (see above).
        objects: :class:`SceneObject` s.
        camera_velocity_px: image motion per frame of points at ``reference_depth_m`` caused
            by a sideways camera motion (parallax: ``reference_depth_m / depth`` times this).
        camera_forward_m: camera motion along the optical axis per frame (depths shrink).
        reference_depth_m: depth whose image moves by ``camera_velocity_px``.
        max_depth_m: depths are clipped here (the RDPD generator clips SYNTHIA at 250 m),
            e.g. where a floor plane reaches the horizon.
    """

    size: tuple[int, int]
    background: torch.Tensor
    inv_depth: tuple[float, float, float] = (0.05, 0.0, 0.0)
    objects: list[SceneObject] = field(default_factory=list)
    camera_velocity_px: tuple[float, float] = (0.0, 0.0)
    camera_forward_m: float = 0.0
    reference_depth_m: float = 5.0
    max_depth_m: float = SYNTHIA_MAX_DEPTH_M

    def render(self, t: float = 0.0) -> SceneSample:
        """The sharp image and depth map at frame (time) ``t``.

        Example:
            >>> scene = objects_scene("coffee", ["chelsea"], (48, 64), object_depths_m=[2.0])
            >>> img, depth = scene.render(0)
            >>> img.shape, sorted(set(depth.flatten().tolist()))
            (torch.Size([1, 3, 48, 64]), [2.0, 20.0])
        """
        t = float(require_number("t", t))
        H, W = _size(self.size)
        ys = torch.arange(H, dtype=torch.float64).reshape(-1, 1)
        xs = torch.arange(W, dtype=torch.float64).reshape(1, -1)
        u, v = (xs - (W - 1) / 2) / W, (ys - (H - 1) / 2) / H
        i0, gx, gy = self.inv_depth
        inv = (i0 + gx * u + gy * v).clamp_min(1.0 / self.max_depth_m)
        depth = ((1.0 / inv) - self.camera_forward_m * t).clamp_min(_MIN_DEPTH_M)
        vx, vy = self.camera_velocity_px
        shift = self.reference_depth_m * t / depth  # parallax of a sideways camera motion
        bg = _resize(self.background, (H, W))
        image = _sample(bg, xs - vx * shift, ys - vy * shift)
        depth = depth.expand(H, W).clone()
        current = []
        for obj in self.objects:
            d = max(obj.depth_m + (obj.depth_velocity_m - self.camera_forward_m) * t, _MIN_DEPTH_M)
            current.append((d, obj))
        for d, obj in sorted(current, key=lambda p: -p[0]):  # far to near
            scale = obj.depth_m / d
            cx = obj.center_px[0] + obj.velocity_px[0] * t + vx * self.reference_depth_m * t / d
            cy = obj.center_px[1] + obj.velocity_px[1] * t + vy * self.reference_depth_m * t / d
            lx = (xs - cx) / (0.5 * obj.size_px[0] * scale)
            ly = (ys - cy) / (0.5 * obj.size_px[1] * scale)
            inside = _shape_mask(obj.shape, lx, ly) & (d < depth)
            if not bool(inside.any()):
                continue
            grid = torch.stack(torch.broadcast_tensors(lx, ly), -1)[None].float()
            colour = F.grid_sample(obj.texture.float(), grid, mode="bilinear",
                                   padding_mode="border", align_corners=False)
            image = torch.where(inside, colour, image)
            depth = torch.where(inside, torch.full_like(depth, d), depth)
        return SceneSample(image.clamp(0.0, 1.0).float(), depth.reshape(1, 1, H, W).float())

    def sequence(self, frames: int, start: float = 0.0) -> SceneSample:
        """Frames ``start, start + 1, ...`` stacked: ``(T, 3, H, W)`` and ``(T, 1, H, W)``.

        Example:
            >>> scene = random_scene((32, 48), torch.Generator().manual_seed(0), motion=True)
            >>> frames = scene.sequence(3)
            >>> frames.image.shape, bool((frames.image[0] != frames.image[2]).any())
            (torch.Size([3, 3, 32, 48]), True)
        """
        n = require_positive("frames", frames, integer=True)
        parts = [self.render(start + k) for k in range(n)]
        return SceneSample(torch.cat([p.image for p in parts]),
                           torch.cat([p.depth_m for p in parts]))


def _sample(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``img`` at pixel coordinates (reflection beyond the edges)."""
    H, W = img.shape[-2:]
    x, y = torch.broadcast_tensors(x, y)
    grid = torch.stack(((2 * x + 1) / W - 1, (2 * y + 1) / H - 1), -1)[None].float()
    return F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def _shape_mask(shape: str, lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    require_choice("shape", shape, SHAPES)
    if shape == "ellipse":
        return lx ** 2 + ly ** 2 <= 1.0
    if shape == "rectangle":
        return (lx.abs() <= 1.0) & (ly.abs() <= 1.0)
    if shape == "diamond":
        return lx.abs() + ly.abs() <= 1.0
    return lx ** 4 + ly ** 4 <= 1.0


def objects_scene(background: str, objects, size, *, background_m: float = 20.0,
                  object_depths_m=None, shapes=None) -> Scene:
    """Objects cut from bundled photos in front of a fronto-parallel background photo.

    Objects are placed side by side along the width, centred vertically, each about half
    the frame height; for a teaching figure with a known answer.

    Args:
        background: name of the background photo (:data:`BUNDLED_IMAGES`).
        objects: names of the object photos.
        size: ``(H, W)``.
        background_m: background depth in metres.
        object_depths_m: one depth per object (default 1.5, 3, 6, ... m).
        shapes: one shape per object (default all ``"ellipse"``).

    Returns:
        A static :class:`Scene`.

    Raises:
        ValueError: unknown names or shapes, lengths that do not match, bad depths.

    Example:
        >>> img, depth = objects_scene("coffee", ["astronaut", "rocket"], (40, 80)).render()
        >>> [float(depth[0, 0, 20, x]) for x in (1, 20, 60)]
        [20.0, 1.5, 3.0]
    """
    h, w = _size(size)
    names = list(objects)
    depths = ([1.5 * 2 ** k for k in range(len(names))] if object_depths_m is None
              else [float(require_positive("object_depths_m", d)) for d in object_depths_m])
    shapes = ["ellipse"] * len(names) if shapes is None else list(shapes)
    if len(depths) != len(names) or len(shapes) != len(names):
        raise ValueError(f"objects ({len(names)}), object_depths_m ({len(depths)}) and shapes "
                         f"({len(shapes)}) must have the same length")
    n = max(len(names), 1)
    objs = [SceneObject(_texture(load_image(name), 0.8 * w / n, 0.5 * h),
                        ((k + 0.5) * w / n, (h - 1) / 2), (0.8 * w / n, 0.5 * h), d, s)
            for k, (name, d, s) in enumerate(zip(names, depths, shapes))]
    bg_d = float(require_positive("background_m", background_m))
    return Scene((h, w), load_image(background, (h, w)), (1.0 / bg_d, 0.0, 0.0), objs)


def _texture(photo: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """``photo`` resized (antialiased) to about the object's size, so sampling does not alias."""
    return _resize(photo, (max(2, math.ceil(height)), max(2, math.ceil(width)))).clamp(0.0, 1.0)


def _uniform(g, lo, hi) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _log_uniform(g, lo, hi) -> float:
    return math.exp(_uniform(g, math.log(lo), math.log(hi)))


def _choice(g, seq):
    return seq[int(torch.randint(len(seq), (), generator=g))]


def random_scene(size, generator: torch.Generator, *, images=COLOR_IMAGES,
                 objects: tuple[int, int] = (1, 3),
                 depth_range_m: tuple[float, float] = (1.0, 250.0),
                 motion: bool = False) -> Scene:
    """A random scene: a background plane (fronto-parallel or slanted) and a few objects.

    The background's depth at the centre is log-uniform in the upper decade of
    ``depth_range_m`` and it is slanted like a floor or wall half of the time; objects are
    random crops of random photos with random outlines, log-uniform depths in the lower part
    of the range and random positions. With ``motion``, the camera pans and moves forward and
    objects move in the image and in depth.

    Args:
        size: ``(H, W)``.
        generator: the only source of randomness.
        images: photo names to draw from.
        objects: ``(min, max)`` number of objects.
        depth_range_m: ``(near, far)`` in metres.
        motion: give the camera and the objects velocities.

    Returns:
        A :class:`Scene`.

    Raises:
        TypeError: ``generator`` is not a ``torch.Generator``.
        ValueError: bad size, ranges or names.

    Example:
        >>> a = random_scene((24, 32), torch.Generator().manual_seed(3)).render()
        >>> b = random_scene((24, 32), torch.Generator().manual_seed(3)).render()
        >>> torch.equal(a.image, b.image) and torch.equal(a.depth_m, b.depth_m)
        True
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    h, w = _size(size)
    names = [require_choice("images", n, BUNDLED_IMAGES) for n in images]
    near, far = (float(require_positive("depth_range_m", v)) for v in depth_range_m)
    if not near < far:
        raise ValueError("depth_range_m must be (near, far) with near < far, "
                         f"got {depth_range_m!r}")
    lo_n, hi_n = (require_positive("objects", v, allow_zero=True, integer=True) for v in objects)
    if lo_n > hi_n:
        raise ValueError(f"objects must be (min, max) with min <= max, got {objects!r}")
    g = generator
    split = math.exp(0.5 * (math.log(near) + math.log(far)))  # geometric middle of the range
    bg_d = _log_uniform(g, max(split, far / 10), far)
    slant = _uniform(g, 0.0, 1.0) < 0.5
    gy = _uniform(g, 0.5, 3.0) / bg_d if slant else 0.0  # floor: nearer at the bottom
    gx = _uniform(g, -1.0, 1.0) / bg_d if slant else 0.0
    inv = (1.0 / bg_d, gx, gy)
    bg = load_image(_choice(g, names), (h, w))
    objs = []
    for _ in range(int(torch.randint(lo_n, hi_n + 1, (), generator=g))):
        photo = load_image(_choice(g, names))
        ph, pw = photo.shape[-2:]
        side = _uniform(g, 0.3, 0.8) * min(ph, pw)
        top, left = _uniform(g, 0, ph - side), _uniform(g, 0, pw - side)
        ow, oh = _uniform(g, 0.15, 0.5) * min(h, w), _uniform(g, 0.15, 0.5) * min(h, w)
        tex = _texture(photo[..., int(top):int(top + side), int(left):int(left + side)], ow, oh)
        obj = SceneObject(tex, (_uniform(g, 0, w), _uniform(g, 0, h)), (ow, oh),
                          _log_uniform(g, near, split), _choice(g, SHAPES))
        if motion:
            d = obj.depth_m
            vel = (_uniform(g, -1, 1) * w / 60, _uniform(g, -1, 1) * h / 60)
            obj = replace(obj, velocity_px=vel,
                          depth_velocity_m=_uniform(g, -0.05, 0.05) * d)
        objs.append(obj)
    cam_v, fwd, ref = (0.0, 0.0), 0.0, split
    if motion:
        cam_v = (_uniform(g, -1, 1) * w / 80, _uniform(g, -1, 1) * h / 160)
        fwd = _uniform(g, 0.0, 0.03) * near
    return Scene((h, w), bg, inv, objs, cam_v, fwd, ref)
