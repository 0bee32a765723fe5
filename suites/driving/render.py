"""A fast ego-centred, heading-up bird's-eye camera for highway-env roads (numpy only, no pygame).

The road network is rasterised once per scenario geometry (cached per process) at ``MAP_RES`` metres per
pixel; each frame is a nearest-neighbour lookup of that raster on a rotated grid plus oriented boxes for the
vehicles. Colours: off-road dark grey, road grey, lane markings white, ego green, other vehicles blue,
static obstacles orange.
"""
from __future__ import annotations

import numpy as np

from highway_env.road.lane import CircularLane, LineType, SineLane, StraightLane

MAP_RES = 0.25  # metres per raster pixel
PALETTE = np.array([[38, 42, 38], [105, 105, 110], [235, 235, 235], [255, 255, 255]], dtype=np.uint8)
EGO_COLOUR = np.array([60, 210, 80], np.uint8)
OTHER_COLOUR = np.array([70, 130, 235], np.uint8)
OBSTACLE_COLOUR = np.array([240, 140, 40], np.uint8)
DASH_PERIOD, DASH_ON = 10.0, 4.0

_MAP_CACHE: dict[str, "RoadRaster"] = {}


def lane_local(lane, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``lane.local_coordinates`` for the three lane types highway-env's scenarios use."""
    if isinstance(lane, CircularLane):
        dx, dy = x - lane.center[0], y - lane.center[1]
        phi = np.arctan2(dy, dx)
        phi = lane.start_phase + (phi - lane.start_phase + np.pi) % (2 * np.pi) - np.pi
        r = np.hypot(dx, dy)
        return lane.direction * (phi - lane.start_phase) * lane.radius, lane.direction * (lane.radius - r)
    if isinstance(lane, StraightLane):
        dx, dy = x - lane.start[0], y - lane.start[1]
        lon = dx * lane.direction[0] + dy * lane.direction[1]
        lat = dx * lane.direction_lateral[0] + dy * lane.direction_lateral[1]
        if isinstance(lane, SineLane):
            lat = lat - lane.amplitude * np.sin(lane.pulsation * lon + lane.phase)
        return lon, lat
    raise TypeError(f"cannot rasterise lane type {type(lane).__name__}")


class RoadRaster:
    """Class map of the road: 0 off-road, 1 drivable, 2 dashed marking, 3 solid marking."""

    def __init__(self, network, bounds: tuple[float, float, float, float] | None = None, period_x: float | None = None):
        lanes = network.lanes_list()
        if bounds is None:
            pts = np.array([lane.position(s, 0) for lane in lanes for s in np.linspace(0, lane.length, 20)])
            bounds = (pts[:, 0].min() - 8, pts[:, 1].min() - 8, pts[:, 0].max() + 8, pts[:, 1].max() + 8)
        self.x0, self.y0, x1, y1 = bounds
        self.period_x = period_x
        self.w = int(np.ceil((x1 - self.x0) / MAP_RES))
        self.h = int(np.ceil((y1 - self.y0) / MAP_RES))
        grid = np.zeros((self.h, self.w), np.uint8)
        marks = np.zeros((self.h, self.w), np.uint8)
        for lane in lanes:
            pts = np.array([lane.position(s, r) for s in np.linspace(0, lane.length, 40) for r in (-3, 3)])
            c0 = max(int((pts[:, 0].min() - self.x0) / MAP_RES) - 2, 0)
            c1 = min(int((pts[:, 0].max() - self.x0) / MAP_RES) + 3, self.w)
            r0 = max(int((pts[:, 1].min() - self.y0) / MAP_RES) - 2, 0)
            r1 = min(int((pts[:, 1].max() - self.y0) / MAP_RES) + 3, self.h)
            if c1 <= c0 or r1 <= r0:
                continue
            xs = self.x0 + (np.arange(c0, c1) + 0.5) * MAP_RES
            ys = self.y0 + (np.arange(r0, r1) + 0.5) * MAP_RES
            X, Y = np.meshgrid(xs, ys)
            lon, lat = lane_local(lane, X, Y)
            half = lane.width_at(0) / 2
            inside = (lon >= 0) & (lon <= lane.length) & (np.abs(lat) <= half)
            grid[r0:r1, c0:c1][inside] = 1
            for side, lt in zip((-1, 1), lane.line_types):
                if lt == LineType.NONE:
                    continue
                near = (lon >= 0) & (lon <= lane.length) & (np.abs(lat - side * half) < 0.2)
                if lt == LineType.STRIPED:
                    near &= (lon % DASH_PERIOD) < DASH_ON
                    marks[r0:r1, c0:c1][near] = np.maximum(marks[r0:r1, c0:c1][near], 2)
                else:
                    marks[r0:r1, c0:c1][near] = 3
        self.seams: list[np.ndarray] = []
        self._connectors(network, grid)
        self.grid = np.where(marks > 0, marks, grid).astype(np.uint8)
        self.drivable = self._seam_tolerant(grid > 0)

    def _seam_tolerant(self, road: np.ndarray, radius_m: float = 1.25, zone_m: float = 8.0) -> np.ndarray:
        """Drivable area for the DAC check: the lanes, widened by ``radius_m`` only within ``zone_m`` of a seam
        where highway-env's consecutive lanes do not meet (roundabout entries join the ring mid-segment,
        ~2 m outside its outer lane): a car following the joined path would otherwise 'leave the road' there."""
        if not self.seams:
            return road
        r = int(round(radius_m / MAP_RES))
        grown = road.copy()
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dx * dx + dy * dy > r * r:
                    continue
                src = road[max(dy, 0):self.h + min(dy, 0), max(dx, 0):self.w + min(dx, 0)]
                grown[max(-dy, 0):self.h + min(-dy, 0), max(-dx, 0):self.w + min(-dx, 0)] |= src
        ys = self.y0 + (np.arange(self.h) + 0.5) * MAP_RES
        xs = self.x0 + (np.arange(self.w) + 0.5) * MAP_RES
        zone = np.zeros_like(road)
        for p in self.seams:
            zone |= ((xs[None, :] - p[0]) ** 2 + (ys[:, None] - p[1]) ** 2) <= zone_m ** 2
        return road | (grown & zone)

    def lookup_drivable(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.period_x is not None:
            x = self.x0 + np.mod(x - self.x0, self.period_x)
        c = ((np.asarray(x) - self.x0) / MAP_RES).astype(np.int64)
        r = ((np.asarray(y) - self.y0) / MAP_RES).astype(np.int64)
        ok = (c >= 0) & (c < self.w) & (r >= 0) & (r < self.h)
        out = np.zeros(np.shape(x), bool)
        out[ok] = self.drivable[r[ok], c[ok]]
        return out

    def _connectors(self, network, grid: np.ndarray, max_gap: float = 8.0) -> None:
        """Fill the gaps highway-env leaves between consecutive lanes (e.g. roundabout entries meet the ring
        5.6 m away from its lane start) with the convex quad between the two lane ends, as drivable."""
        for _from, tos in network.graph.items():
            for _to, lanes_a in tos.items():
                for a in lanes_a:
                    for b in [lane for lanes_b in network.graph.get(_to, {}).values() for lane in lanes_b]:
                        pa, pb = a.position(a.length, 0), b.position(0, 0)
                        if not 0.3 < np.linalg.norm(pa - pb) < max_gap:
                            continue
                        self.seams += [pa, pb]
                        wa, wb = a.width_at(a.length) / 2 + 1.5, b.width_at(0) / 2 + 1.5
                        quad = np.array([a.position(a.length, -wa), a.position(a.length, wa),
                                         b.position(0, wb), b.position(0, -wb)])
                        self._fill_convex(grid, quad)

    def _fill_convex(self, grid: np.ndarray, poly: np.ndarray) -> None:
        c0 = max(int((poly[:, 0].min() - self.x0) / MAP_RES), 0)
        c1 = min(int((poly[:, 0].max() - self.x0) / MAP_RES) + 2, self.w)
        r0 = max(int((poly[:, 1].min() - self.y0) / MAP_RES), 0)
        r1 = min(int((poly[:, 1].max() - self.y0) / MAP_RES) + 2, self.h)
        if c1 <= c0 or r1 <= r0:
            return
        X, Y = np.meshgrid(self.x0 + (np.arange(c0, c1) + 0.5) * MAP_RES, self.y0 + (np.arange(r0, r1) + 0.5) * MAP_RES)
        signs = []
        for i in range(len(poly)):
            p, q = poly[i], poly[(i + 1) % len(poly)]
            signs.append((q[0] - p[0]) * (Y - p[1]) - (q[1] - p[1]) * (X - p[0]))
        S = np.stack(signs)
        inside = (S >= 0).all(0) | (S <= 0).all(0)
        grid[r0:r1, c0:c1][inside] = 1

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.period_x is not None:
            x = self.x0 + np.mod(x - self.x0, self.period_x)
        c = ((x - self.x0) / MAP_RES).astype(np.int64)
        r = ((y - self.y0) / MAP_RES).astype(np.int64)
        ok = (c >= 0) & (c < self.w) & (r >= 0) & (r < self.h)
        out = np.zeros(x.shape, np.uint8)
        out[ok] = self.grid[r[ok], c[ok]]
        return out


def road_raster(key: str, network, **kw) -> RoadRaster:
    if key not in _MAP_CACHE:
        _MAP_CACHE[key] = RoadRaster(network, **kw)
    return _MAP_CACHE[key]


class BevCamera:
    """Ego-centred heading-up top-down RGB image: ``size`` x ``size`` px covering ``range_m`` metres."""

    def __init__(self, size: int = 128, range_m: float = 64.0, ego_row: float = 0.7):
        if size < 16 or size > 1024:
            raise ValueError(f"camera size must be in [16, 1024] px, got {size}")
        self.size, self.range_m = int(size), float(range_m)
        self.mpp = self.range_m / self.size
        rows = (np.arange(self.size) + 0.5)
        self.r0, self.c0 = ego_row * self.size, self.size / 2
        self.xe = ((self.r0 - rows) * self.mpp)[:, None] * np.ones((1, self.size))  # forward
        self.ye = ((self.c0 - (np.arange(self.size) + 0.5)) * self.mpp)[None, :] * np.ones((self.size, 1))  # left

    def render(self, raster: RoadRaster, ego, vehicles, obstacles=()) -> np.ndarray:
        px, py, h = float(ego.position[0]), float(ego.position[1]), float(ego.heading)
        c, s = np.cos(h), np.sin(h)
        wx = px + self.xe * c + self.ye * s
        wy = py + self.xe * s - self.ye * c
        img = PALETTE[raster.lookup(wx, wy)]
        reach = self.range_m * 0.75
        for obj, colour in [(o, OBSTACLE_COLOUR) for o in obstacles] + [(v, OTHER_COLOUR) for v in vehicles] \
                + [(ego, EGO_COLOUR)]:
            d = obj.position - ego.position
            if abs(d[0]) > reach or abs(d[1]) > reach:
                continue
            self._box(img, d[0] * c + d[1] * s, d[0] * s - d[1] * c, obj.heading - h, obj.LENGTH, obj.WIDTH, colour)
        return img

    def _box(self, img, xf, yl, rel_h, length, width, colour) -> None:
        # centre in pixel coordinates (row, col); the box's long axis rotates by -rel_h in the ego frame
        rc, cc = self.r0 - xf / self.mpp, self.c0 - yl / self.mpp
        half = 0.5 * np.hypot(length, width) / self.mpp + 1
        r0, r1 = max(int(rc - half), 0), min(int(rc + half) + 2, self.size)
        c0, c1 = max(int(cc - half), 0), min(int(cc + half) + 2, self.size)
        if r1 <= r0 or c1 <= c0:
            return
        rr, cc_ = np.mgrid[r0:r1, c0:c1]
        fx = (rc - (rr + 0.5)) * self.mpp  # ego-frame forward offset from the box centre
        fy = (cc - (cc_ + 0.5)) * self.mpp  # ego-frame left offset
        # heading relative to ego, in the ego (x fwd, y left) frame: world heading is clockwise-positive
        ch, sh = np.cos(-rel_h), np.sin(-rel_h)
        u = fx * ch + fy * sh
        v = -fx * sh + fy * ch
        m = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
        img[r0:r1, c0:c1][m] = colour
