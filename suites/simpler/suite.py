"""SIMPLER suites on ManiSkill3 3.0.1 (SAPIEN 3, CPU simulation, Vulkan through Mesa lavapipe).

* ``simpler_bridge-v1`` — SIMPLER's four WidowX/Bridge visual-matching tasks through ManiSkill3's ports. Needs the
  ``bridge_v2_real2sim`` and ``widowx250s`` assets; without them ``make_env`` raises :class:`MissingAssetsError`
  naming the download command and the folder to copy (listing and construction work without them).
* ``simpler_tabletop-v1`` — ManiSkill3 tabletop tasks with SIMPLER's action and control conventions (not SIMPLER
  numbers): 11 tasks over PickCube, StackCube, PushCube, PullCube, PlaceSphere and LiftPegUpright, varied so the
  instruction matters.

Observation::

    {"images": {"base": uint8 (H, W, 3)},        # tabletop: 128x128 base_camera; bridge: 480x640 3rd_view_camera
     "proprio": float32 (8,),                     # TCP pose xyz + quaternion (w, x, y, z) | gripper opening (m)
     "instruction": str,
     "privileged": {...}}                         # only with make_env(privileged=True): object/goal/TCP poses

Action (tabletop): 7-D ``[dx, dy, dz, drx, dry, drz, gripper]`` in [-1, 1] for ManiSkill's ``pd_ee_delta_pose``
(1.0 = 10 cm / 0.1 rad, translation in the robot base frame, rotation about base-aligned axes at the TCP;
gripper +1 open, -1 closed). Action (bridge): the twin's native controller, deltas in metres / radians.
``info["success"]`` is the ManiSkill3 task's own check (pick: grasped and lifted >= 5 cm).
"""
from __future__ import annotations

import os
import subprocess
from typing import Any

from harness.interfaces import EpisodeResult, Policy, Profile, Suite, Task, derive_seed

# never let ManiSkill answer its own download prompt with "yes"
if os.environ.get("MS_SKIP_ASSET_DOWNLOAD_PROMPT") == "1":
    os.environ["MS_SKIP_ASSET_DOWNLOAD_PROMPT"] = "0"


def _import_envs() -> Any:
    """The simulator module; an ImportError (extra not installed) names the extra."""
    try:
        import mani_skill  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the simpler suites need the `simpler` extra (mani-skill==3.0.1, sapien==3.0.3): "
                          f"`make setup SUITE=simpler_tabletop-v1` ({e})") from e
    from suites.simpler import envs

    envs.forbid_downloads()
    return envs


def mesa_version() -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "mesa-vulkan-drivers"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class _SimplerSuite(Suite):
    tier: str = ""
    cameras = ("base",)
    teacher = "reference"

    def __init__(self) -> None:
        super().__init__()
        import importlib.util

        if importlib.util.find_spec("mani_skill") is None:  # cheap: no simulator import at construction
            raise ImportError(f"{self.suite_id} needs the `simpler` extra (mani-skill==3.0.1, sapien==3.0.3): "
                              f"`make setup SUITE={self.suite_id}`")
        self._cfg = self.protocol[self.tier]

    def tasks(self) -> list[Task]:
        return [Task(t["name"], t["instruction"], i, meta={k: v for k, v in t.items() if k not in ("name", "instruction")})
                for i, t in enumerate(self._cfg["tasks"])]

    def profiles(self) -> dict[str, Profile]:
        out = {}
        for name, cfg in self._cfg["profiles"].items():
            cfg = dict(cfg)
            if cfg.get("tasks") is not None:
                cfg["tasks"] = tuple(cfg["tasks"])
            out[name] = Profile(name, **cfg)
        return out

    def max_steps(self, task: Task) -> int:
        return int(task.meta["max_steps"])

    def task(self, name: str) -> Task:
        by_name = {t.name: t for t in self.tasks()}
        if name not in by_name:
            raise KeyError(f"{self.suite_id} has no task {name!r}; tasks: {', '.join(by_name)}")
        return by_name[name]

    def aggregate(self, episodes: list[EpisodeResult]) -> dict[str, Any]:
        rows = [e for e in episodes if e.metrics and e.error is None]
        if not rows:
            return {}
        out: dict[str, Any] = {"n_with_metrics": len(rows)}
        keys = ("grasped", "moved", "moved_wrong")
        for k in keys:
            vals = [bool(e.metrics.get(k)) for e in rows if k in e.metrics]
            if vals:
                out[f"{k}_rate"] = sum(vals) / len(vals)
        steps = [e.metrics["success_step"] for e in rows if e.metrics.get("success_step") is not None]
        out["mean_steps_to_success"] = sum(steps) / len(steps) if steps else None
        per_task: dict[str, dict[str, Any]] = {}
        for e in rows:
            t = per_task.setdefault(e.task, {"n": 0, **{f"{k}_rate": 0.0 for k in keys}})
            t["n"] += 1
            for k in keys:
                t[f"{k}_rate"] += float(bool(e.metrics.get(k)))
        for t in per_task.values():
            for k in keys:
                t[f"{k}_rate"] /= t["n"]
        out["per_task"] = per_task
        return out

    def provenance(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        def ver(p: str) -> str | None:
            try:
                return version(p)
            except PackageNotFoundError:
                return None

        return {"simulator": "ManiSkill3 (SAPIEN 3)", "mani_skill": ver("mani-skill"), "sapien": ver("sapien"),
                "torch": ver("torch"), "render_backend": "Vulkan via Mesa lavapipe (CPU)",
                "mesa_vulkan_drivers": mesa_version(), "sim_backend": self.protocol["sim_backend"],
                "tier": self.tier, "control_hz": self._cfg["control_hz"], "sim_hz": self._cfg["sim_hz"],
                "control_mode": self._cfg["control_mode"], "image_size": self._cfg["image_size"],
                "MS_ASSET_DIR": os.environ.get("MS_ASSET_DIR")}

    def demo_seed(self, task: Task, i: int) -> int:
        """Seeds for demonstrations: a different derivation than ``episode_seed`` (disjointness is checked)."""
        return derive_seed(self.suite_id, task.name, "demo", i)

    def demonstrations(self) -> Any:
        from suites.simpler.demos import load_demos

        return load_demos(self.suite_id)

    def expert(self) -> Policy:
        from suites.simpler.expert import SimplerExpert

        return SimplerExpert()


class SimplerTabletopSuite(_SimplerSuite):
    suite_id = "simpler_tabletop-v1"
    description = "ManiSkill3 tabletop tasks with SIMPLER's action and control conventions (not SIMPLER numbers)"
    tier = "tabletop"

    def make_env(self, task: Task, *, privileged: bool = False, **options: Any) -> Any:
        envs = _import_envs()
        cfg = self._cfg
        size = tuple(options.get("image_size", cfg["image_size"]))
        cls = envs.make_tabletop_class(task.meta["kind"], task.meta.get("variant") or {})
        render = bool(options.get("render", True))  # False: no camera (state only) — for expert tuning
        ms_kwargs = dict(obs_mode=cfg["obs_mode"] if render else "state_dict", control_mode=cfg["control_mode"],
                         num_envs=1,
                         sim_backend=self.protocol["sim_backend"], render_mode="rgb_array",
                         reward_mode="none", sensor_configs=dict(width=size[1], height=size[0]))
        return envs.SimplerEnv(tier="tabletop", kind=task.meta["kind"], instruction=task.instruction,
                               ms_kwargs=ms_kwargs, env_cls=cls, env_id=None, camera=cfg["camera"],
                               image_size=size, privileged=privileged)


class SimplerBridgeSuite(_SimplerSuite):
    suite_id = "simpler_bridge-v1"
    description = "SIMPLER's WidowX/Bridge visual-matching tasks via ManiSkill3 (assets required)"
    tier = "bridge"

    def assets_available(self) -> bool:
        from suites.simpler.envs import missing_bridge_assets

        return not missing_bridge_assets()

    def unavailable(self) -> str | None:
        """Why envs cannot be built here (None when they can): the conformance test skips env checks then."""
        from suites.simpler.envs import DOWNLOAD_COMMAND, missing_bridge_assets

        missing = missing_bridge_assets()
        if not missing:
            return None
        return (f"ManiSkill3 assets missing ({', '.join(k for k, _ in missing)}); run `{DOWNLOAD_COMMAND}` on a "
                f"networked machine and copy its MS_ASSET_DIR here")

    def make_env(self, task: Task, *, privileged: bool = False, **options: Any) -> Any:
        from suites.simpler.envs import check_bridge_assets

        check_bridge_assets()  # fails fast, before ManiSkill could prompt or download
        envs = _import_envs()
        cfg = self._cfg
        size = options.get("image_size", cfg["image_size"])
        ms_kwargs = dict(obs_mode=cfg["obs_mode"], num_envs=1, sim_backend=self.protocol["sim_backend"],
                         render_mode="rgb_array")
        return envs.SimplerEnv(tier="bridge", kind=task.name, instruction=task.instruction, ms_kwargs=ms_kwargs,
                               env_cls=None, env_id=task.meta["env_id"], camera=cfg["camera"],
                               image_size=tuple(size) if size else None, privileged=privileged,
                               bridge_episode_ids=bool(cfg["episode_id_from_trial"]))
