"""A stand-in for the Hugging Face Hub in tests: records every ``HfApi`` call, keeps a copy of every uploaded
folder, and never touches the network.

    recorder = HubRecorder.install(monkeypatch)
    ...code that pushes...
    assert recorder.names() == ["create_repo", "update_repo_settings", "upload_folder"]
    recorder.files("me/express4d")["README.md"]   # the uploaded text
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any


@dataclass
class HubCall:
    name: str
    args: tuple
    kwargs: dict[str, Any]


@dataclass
class HubRecorder:
    calls: list[HubCall] = field(default_factory=list)
    uploads: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> {path in repo: bytes}

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def call(self, name: str) -> HubCall:
        (found,) = [c for c in self.calls if c.name == name]
        return found

    def files(self, repo_id: str) -> dict[str, bytes]:
        return self.uploads[repo_id]

    def text(self, repo_id: str, path: str) -> str:
        return self.uploads[repo_id][path].decode("utf-8")

    # -- the fake API ------------------------------------------------------------------------------------
    def _create_repo(self, repo_id, **kwargs):
        from huggingface_hub import RepoUrl

        self.calls.append(HubCall("create_repo", (repo_id,), kwargs))
        kind = kwargs.get("repo_type") or "model"
        prefix = "" if kind == "model" else f"{kind}s/"
        return RepoUrl(f"https://huggingface.co/{prefix}{repo_id}")

    def _upload_folder(self, *args, **kwargs):
        self.calls.append(HubCall("upload_folder", args, kwargs))
        folder = Path(kwargs["folder_path"])
        allow = kwargs.get("allow_patterns")
        allow = [allow] if isinstance(allow, str) else allow
        ignore = kwargs.get("ignore_patterns")
        ignore = [ignore] if isinstance(ignore, str) else ignore or []
        prefix = (kwargs.get("path_in_repo") or "").strip("/")
        store = self.uploads.setdefault(kwargs["repo_id"], {})
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            if allow is not None and not any(fnmatch(rel, p) for p in allow):
                continue
            if any(fnmatch(rel, p) for p in ignore):
                continue
            store[f"{prefix}/{rel}" if prefix else rel] = path.read_bytes()
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/0"

    def _record(self, name: str):
        def method(*args, **kwargs):
            self.calls.append(HubCall(name, args, kwargs))

        return method

    @classmethod
    def install(cls, monkeypatch) -> HubRecorder:
        """Replace ``huggingface_hub.HfApi`` (and the module-level shortcuts) with recorders."""
        import huggingface_hub

        recorder = cls()

        class RecordingHfApi:
            def __init__(self, *args, **kwargs):
                recorder.calls.append(HubCall("HfApi", args, kwargs))

            def create_repo(self, repo_id, **kwargs):
                return recorder._create_repo(repo_id, **kwargs)

            def upload_folder(self, *args, **kwargs):
                return recorder._upload_folder(*args, **kwargs)

            def __getattr__(self, name):
                if name.startswith("_"):
                    raise AttributeError(name)
                return recorder._record(name)

        monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
        monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: recorder._create_repo(repo_id, **kw))
        monkeypatch.setattr(huggingface_hub, "upload_folder", lambda *a, **kw: recorder._upload_folder(*a, **kw))
        return recorder
