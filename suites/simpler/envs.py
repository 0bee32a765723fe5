"""Simulator side of the SIMPLER suites: ManiSkill3 env construction, the asset check and the Gymnasium wrapper.

Imported lazily by ``suite.py`` (it imports torch and ManiSkill3). Two kinds of env:

* tabletop (``simpler_tabletop-v1``): ManiSkill3 Panda tabletop tasks that need no download, varied so the
  instruction matters (distractor cubes of other colours; which cube goes on which) — built by subclassing the
  ManiSkill3 task classes and swapping which actor the task's own code treats as "the object".
* bridge (``simpler_bridge-v1``): ManiSkill3's ports of SIMPLER's four WidowX/Bridge digital twins; they need the
  ``bridge_v2_real2sim`` and ``widowx250s`` assets, which are checked *before* ManiSkill is asked to build the env
  (ManiSkill would otherwise prompt on stdin and download).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from harness.interfaces import SuiteUnavailableError

# ----------------------------------------------------------------------------------------------------------
# assets (no ManiSkill import needed: the paths are ManiSkill3 3.0.1's own, see mani_skill/utils/assets/data.py)
# ----------------------------------------------------------------------------------------------------------
BRIDGE_ASSETS = {  # data source id -> path below $MS_ASSET_DIR/data
    "bridge_v2_real2sim": "tasks/bridge_v2_real2sim_dataset",
    "widowx250s": "robots/widowx",
}
DOWNLOAD_COMMAND = "python -m mani_skill.utils.download_asset bridge_v2_real2sim widowx250s"


class MissingAssetsError(SuiteUnavailableError):
    """The Bridge digital twins' assets are not on this machine (nothing is downloaded at run time)."""


def asset_root() -> Path:
    """ManiSkill3's asset folder: ``$MS_ASSET_DIR`` (default ``~/.maniskill``)."""
    return Path(os.environ.get("MS_ASSET_DIR", os.path.join(os.path.expanduser("~"), ".maniskill")))


def missing_bridge_assets() -> list[tuple[str, Path]]:
    data = asset_root() / "data"
    return [(k, data / rel) for k, rel in BRIDGE_ASSETS.items() if not (data / rel).exists()]


def bridge_assets_message(missing: list[tuple[str, Path]]) -> str:
    root = asset_root()
    lines = "\n".join(f"  - {k}: expected at {p}" for k, p in missing)
    return (
        f"simpler_bridge-v1 needs ManiSkill3 assets that are not on this machine (nothing is downloaded at run "
        f"time):\n{lines}\n"
        f"On a machine with network access run:\n  {DOWNLOAD_COMMAND}\n"
        f"(answer 'y'), then copy that machine's MS_ASSET_DIR folder (default ~/.maniskill; it holds "
        f"data/tasks/bridge_v2_real2sim_dataset and data/robots/widowx) to this machine at {root} "
        f"(MS_ASSET_DIR={os.environ.get('MS_ASSET_DIR', '<unset>')}), or point MS_ASSET_DIR at the copied folder.")


def check_bridge_assets() -> None:
    missing = missing_bridge_assets()
    if missing:
        raise MissingAssetsError(bridge_assets_message(missing))


def forbid_downloads() -> None:
    """Make ManiSkill3's download/prompt helpers raise instead of reading stdin or touching the network."""
    if os.environ.get("MS_SKIP_ASSET_DOWNLOAD_PROMPT") == "1":
        # with this set, ManiSkill answers its own "download now?" prompt with yes
        os.environ["MS_SKIP_ASSET_DOWNLOAD_PROMPT"] = "0"
    from mani_skill.utils import download_asset

    def _refuse(*args: Any, **kwargs: Any) -> Any:
        missing = missing_bridge_assets()
        raise MissingAssetsError(bridge_assets_message(missing) if missing else
                                 f"ManiSkill3 tried to download or prompt for assets ({args!r}); vla-bench never "
                                 f"downloads at run time. Run `python -m mani_skill.utils.download_asset ...` "
                                 f"on a networked machine and copy MS_ASSET_DIR here.")

    for name in ("prompt_yes_no", "download", "download_from_hf_datasets"):
        setattr(download_asset, name, _refuse)


# ----------------------------------------------------------------------------------------------------------
# tabletop task variants
# ----------------------------------------------------------------------------------------------------------
COLOURS = {  # RGBA in [0, 1]
    "red": (1.0, 0.0, 0.0, 1.0),  # PickCube's / StackCube A's own colour
    "green": (0.0, 1.0, 0.0, 1.0),  # StackCube B's own colour
    "blue": (12 / 255, 42 / 255, 160 / 255, 1.0),  # PushCube / PullCube / PlaceSphere's own colour
    "yellow": (0.95, 0.8, 0.0, 1.0),
}
LIFT_HEIGHT = 0.05  # pick tasks: the instructed cube's bottom >= 5 cm above the table while grasped

_CLASSES: dict[str, type] = {}


def _rand_xy(n: int, lo: tuple[float, float], hi: tuple[float, float]) -> np.ndarray:
    import torch

    u = torch.rand((n, 2), dtype=torch.float64).numpy()
    return np.asarray(lo) + u * (np.asarray(hi) - np.asarray(lo))


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _place_distractors(env: Any, actors: list, half: float, points: list, segments: list,
                       lo=(-0.12, -0.2), hi=(0.18, 0.2), clearance: float = 0.075) -> None:
    """Rejection-sample free table positions for ``actors`` (deterministic: torch RNG seeded by ManiSkill).

    ``points``: xy or (xy, clearance) to keep away from; ``segments``: (a, b) pairs (a gripper's path)."""
    points = [(p, clearance) if not isinstance(p, tuple) else p for p in points]
    import torch
    from mani_skill.utils.structs.pose import Pose

    placed: list[np.ndarray] = []
    for actor in actors:
        for _ in range(200):
            xy = _rand_xy(1, lo, hi)[0]
            if all(np.linalg.norm(xy - np.asarray(p)) >= c for p, c in points + [(q, clearance) for q in placed]) and \
                    all(_seg_dist(xy, np.asarray(a), np.asarray(b)) >= clearance for a, b in segments):
                break
        placed.append(xy)
        yaw = float(torch.rand(1).item()) * np.pi / 2
        q = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        actor.set_pose(Pose.create_from_pq(torch.tensor([[xy[0], xy[1], half]], dtype=torch.float32),
                                           torch.tensor([q], dtype=torch.float32)))


def _xy(actor: Any) -> np.ndarray:
    return actor.pose.p[0, :2].cpu().numpy().astype(np.float64)


def tabletop_class(kind: str) -> type:
    """The ManiSkill3 env class for a tabletop ``kind`` (pick/stack/push/pull/place_sphere/lift_peg)."""
    if _CLASSES:
        return _CLASSES[kind]
    import torch
    from mani_skill.envs.tasks.tabletop.lift_peg_upright import LiftPegUprightEnv
    from mani_skill.envs.tasks.tabletop.pick_cube import PickCubeEnv
    from mani_skill.envs.tasks.tabletop.place_sphere import PlaceSphereEnv
    from mani_skill.envs.tasks.tabletop.pull_cube import PullCubeEnv
    from mani_skill.envs.tasks.tabletop.push_cube import PushCubeEnv
    from mani_skill.envs.tasks.tabletop.stack_cube import StackCubeEnv
    from mani_skill.utils.building import actors as ms_actors

    def build_cube(env: Any, colour: str, half: float) -> Any:
        import sapien

        return ms_actors.build_cube(env.scene, half_size=half, color=list(COLOURS[colour]), name=f"{colour}_cube",
                                    initial_pose=sapien.Pose(p=[0.3, 0.3, half]))

    class PickColourCube(PickCubeEnv):
        """PickCube with three cubes (red, green, blue); the instruction names the one to lift."""

        target_colour = "red"

        def _load_scene(self, options: dict) -> None:
            super()._load_scene(options)
            own = self.cube  # red
            self.cubes = {"red": own}
            for c in ("green", "blue"):
                self.cubes[c] = build_cube(self, c, self.cube_half_size)
            self.cube = self.cubes[self.target_colour]
            self.distractors = [a for c, a in self.cubes.items() if c != self.target_colour]

        def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
            super()._initialize_episode(env_idx, options)
            with torch.device(self.device):
                _place_distractors(self, self.distractors, self.cube_half_size, [_xy(self.cube)], [])

        def evaluate(self) -> dict:
            info = super().evaluate()
            lifted = (self.cube.pose.p[:, 2] - self.cube_half_size) >= LIFT_HEIGHT
            info["is_lifted"] = lifted
            info["success"] = lifted & info["is_grasped"]
            return info

    class StackColourCube(StackCubeEnv):
        """StackCube (red, green) plus a blue distractor; the instruction says which cube goes on which."""

        top_colour = "red"

        def _load_scene(self, options: dict) -> None:
            super()._load_scene(options)
            self.cubes = {"red": self.cubeA, "green": self.cubeB, "blue": build_cube(self, "blue", 0.02)}
            bottom = "green" if self.top_colour == "red" else "red"
            self.cubeA, self.cubeB = self.cubes[self.top_colour], self.cubes[bottom]
            self.distractors = [self.cubes["blue"]]

        def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
            super()._initialize_episode(env_idx, options)
            with torch.device(self.device):
                _place_distractors(self, self.distractors, 0.02, [_xy(self.cubeA), _xy(self.cubeB)], [])

    def push_pull(base: type, sign: float) -> type:
        class PushPullColourCube(base):
            """Push/PullCube with a second cube of another colour; the instruction names the one to move."""

            target_colour = "blue"

            def _load_scene(self, options: dict) -> None:
                super()._load_scene(options)
                self.cubes = {"blue": self.obj, "yellow": build_cube(self, "yellow", self.cube_half_size)}
                self.obj = self.cubes[self.target_colour]
                self.distractors = [a for c, a in self.cubes.items() if c != self.target_colour]

            def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
                super()._initialize_episode(env_idx, options)
                with torch.device(self.device):
                    obj, goal = _xy(self.obj), _xy(self.goal_region)
                    start = obj - sign * np.array([0.07, 0.0])  # where the gripper stands before moving the cube
                    _place_distractors(self, self.distractors, self.cube_half_size, [obj, (goal, 0.14)],
                                       [(start, goal)], clearance=0.08)

        return PushPullColourCube

    _CLASSES.update(pick=PickColourCube, stack=StackColourCube, push=push_pull(PushCubeEnv, 1.0),
                    pull=push_pull(PullCubeEnv, -1.0), place_sphere=PlaceSphereEnv, lift_peg=LiftPegUprightEnv)
    return _CLASSES[kind]


def make_tabletop_class(kind: str, variant: dict[str, Any]) -> type:
    """A subclass of the kind's class with the task's variant attributes (target colour, ...)."""
    base = tabletop_class(kind)
    if not variant:
        return base
    name = f"{base.__name__}_" + "_".join(f"{k}_{v}" for k, v in sorted(variant.items()))
    return type(name, (base,), dict(variant))


# ----------------------------------------------------------------------------------------------------------
# the Gymnasium wrapper (obs contract, success, episode metrics)
# ----------------------------------------------------------------------------------------------------------
def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _pose7(actor: Any) -> np.ndarray:
    return _np(actor.pose.raw_pose)[0].astype(np.float64)  # x y z qw qx qy qz


class SimplerEnv(gym.Env):
    """One task; reused across its episodes. ``reset(seed=...)`` gives the episode's fixed initial state."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, *, tier: str, kind: str, instruction: str, ms_kwargs: dict[str, Any], env_cls: type | None,
                 env_id: str | None, camera: str, image_size: tuple[int, int] | None, privileged: bool,
                 bridge_episode_ids: bool = False):
        import torch

        torch.set_num_threads(1)
        self.tier, self.kind, self.instruction, self.privileged = tier, kind, instruction, privileged
        self.camera, self.image_size, self.bridge_episode_ids = camera, image_size, bridge_episode_ids
        if env_cls is not None:
            self.ms = env_cls(**ms_kwargs)
        else:
            self.ms = gym.make(env_id, **ms_kwargs).unwrapped
        _keep_render_device_alive(self.ms)
        space = self.ms.single_action_space if hasattr(self.ms, "single_action_space") else self.ms.action_space
        self.action_space = gym.spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32),
                                           dtype=np.float32)
        self._metrics: dict[str, Any] = {}
        self._start_xy: dict[str, np.ndarray] = {}
        self._steps = 0

    # ----- objects the expert and the metrics look at -----
    def _target(self) -> Any:
        ms = self.ms
        if self.tier == "bridge":
            return ms.objs[ms.source_obj_name]
        return {"pick": lambda: ms.cube, "stack": lambda: ms.cubeA, "push": lambda: ms.obj, "pull": lambda: ms.obj,
                "place_sphere": lambda: ms.obj, "lift_peg": lambda: ms.peg}[self.kind]()

    def _others(self) -> dict[str, Any]:
        ms = self.ms
        if self.tier == "bridge":
            return {n: a for n, a in ms.objs.items() if n != ms.source_obj_name}
        if self.kind in ("pick", "push", "pull", "stack"):
            t = self._target()
            return {getattr(a, "name", str(i)): a for i, a in enumerate(ms.cubes.values()) if a is not t}
        if self.kind == "place_sphere":
            return {"bin": ms.bin}
        return {}

    def _tcp_pose(self) -> np.ndarray:
        agent = self.ms.agent
        link = agent.tcp if hasattr(agent, "tcp") else agent.robot.links_map["ee_gripper_link"]  # WidowX: no tcp
        return _np(link.pose.raw_pose)[0].astype(np.float64)

    def privileged_state(self) -> dict[str, Any]:
        ms = self.ms
        st: dict[str, Any] = {
            "tier": self.tier, "kind": self.kind,
            "tcp_pose": self._tcp_pose(),
            "target_pose": _pose7(self._target()),
            "others": {k: _pose7(a) for k, a in self._others().items()},
            "grasped": bool(_np(ms.agent.is_grasping(self._target()))[0]),
        }
        if self.tier == "tabletop":
            if self.kind == "pick":
                st["half_size"] = float(ms.cube_half_size)
            elif self.kind == "stack":
                st["half_size"] = 0.02
                st["goal_pose"] = _pose7(ms.cubeB)
            elif self.kind in ("push", "pull"):
                st["half_size"] = float(ms.cube_half_size)
                st["goal_pose"] = _pose7(ms.goal_region)
                st["goal_radius"] = float(ms.goal_radius)
            elif self.kind == "place_sphere":
                st["radius"] = float(ms.radius)
                st["goal_pose"] = _pose7(ms.bin)
                st["bin_wall_height"] = float(2 * ms.edge_block_half_size[2] + ms.block_half_size[0])
            elif self.kind == "lift_peg":
                st["peg_half_length"] = float(ms.peg_half_length)
                st["peg_half_width"] = float(ms.peg_half_width)
        else:
            st["goal_pose"] = _pose7(ms.objs[ms.target_obj_name])
            st["target_bbox"] = _np(ms.episode_source_obj_bbox_world).astype(np.float64)
            st["goal_bbox"] = _np(ms.episode_target_obj_bbox_world).astype(np.float64)
        return st

    # ----- observations -----
    def _obs(self, raw: dict) -> dict[str, Any]:
        images = {}
        if "sensor_data" in raw and self.camera in raw["sensor_data"]:
            img = _np(raw["sensor_data"][self.camera]["rgb"])[0]
            if self.image_size is not None and img.shape[:2] != tuple(self.image_size):
                img = _resize(img, self.image_size)
            images["base"] = np.ascontiguousarray(img, dtype=np.uint8)
        tcp = self._tcp_pose()
        qpos = _np(raw["agent"]["qpos"])[0]
        obs = {"images": images,
               "proprio": np.concatenate([tcp, [qpos[-2:].sum()]]).astype(np.float32),
               "instruction": self.instruction}
        if self.privileged:
            obs["privileged"] = self.privileged_state()
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        ms_options: dict[str, Any] = {}
        ep = (options or {}).get("episode")
        if self.bridge_episode_ids and ep is not None:
            ms_options["episode_id"] = int(ep.trial)  # SIMPLER's fixed object configuration
        raw, info = self.ms.reset(seed=seed, options=ms_options)
        self._steps = 0
        self._start_xy = {"target": _pose7(self._target())[:2],
                          **{k: _pose7(a)[:2] for k, a in self._others().items()}}
        self._metrics = {"grasped": False, "moved": False, "moved_wrong": False, "success_step": None,
                         "final_target_displacement": 0.0}
        return self._obs(raw), {"success": False}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        import torch

        a = torch.as_tensor(np.asarray(action, dtype=np.float32)[None])
        raw, reward, terminated, truncated, info = self.ms.step(a)
        self._steps += 1
        success = bool(_np(info["success"]).reshape(-1)[0])
        grasped = bool(_np(self.ms.agent.is_grasping(self._target())).reshape(-1)[0])
        m = self._metrics
        m["grasped"] = m["grasped"] or grasped
        disp = float(np.linalg.norm(_pose7(self._target())[:2] - self._start_xy["target"]))
        m["final_target_displacement"] = disp
        m["moved"] = m["moved"] or disp > 0.03  # SIMPLER's moved_correct_obj threshold (3 cm in xy)
        others = [float(np.linalg.norm(_pose7(a)[:2] - self._start_xy[k])) for k, a in self._others().items()
                  if k != "bin" and self.kind != "place_sphere"]
        m["moved_wrong"] = m["moved_wrong"] or any(d > 0.03 for d in others)
        if success and m["success_step"] is None:
            m["success_step"] = self._steps
        out_info = {"success": success, "grasped": grasped}
        return self._obs(raw), float(_np(reward).reshape(-1)[0]), bool(_np(terminated).reshape(-1)[0]) and success, \
            False, out_info

    def episode_metrics(self) -> dict[str, Any]:
        return dict(self._metrics)

    def render(self) -> np.ndarray:
        return _np(self.ms.render())[0]

    def close(self) -> None:
        try:
            self.ms.close()
        except Exception:  # noqa: BLE001
            pass


_RENDER_KEEPALIVE: list = []


def _keep_render_device_alive(ms: Any) -> None:
    """Hold one SAPIEN render system for the life of the process.

    When the last env of a process is closed SAPIEN frees the Vulkan device, and the next env pays lavapipe's
    shader compilation again (5 s idle, ~50 s on a loaded 2-core machine) — the runner closes a task's env
    before building the next task's, so without this every task change costs that."""
    if _RENDER_KEEPALIVE:
        return
    device = getattr(ms, "_render_device", None)
    if device is None:
        return
    try:
        import sapien

        _RENDER_KEEPALIVE.append(sapien.render.RenderSystem(device))
    except Exception:  # noqa: BLE001 — no renderer (state-only env): nothing to keep
        pass


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (no OpenCV/PIL dependency); ``size`` is (H, W)."""
    h, w = img.shape[:2]
    rows = (np.arange(size[0]) * h / size[0]).astype(int)
    cols = (np.arange(size[1]) * w / size[1]).astype(int)
    return img[rows][:, cols]
