"""``kustomize build`` for the features deploy/k8s uses, in Python: no kustomize or kubectl binary installs here.

Supported: ``resources`` (YAML files, possibly with several documents, and folders holding a
kustomization.yaml) and ``images`` (``name`` -> ``newName``/``newTag``). Any other field of a
kustomization raises, so the manifests cannot start using a feature these tests would silently skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images"}


def _set_image(image: str, rules: list[dict[str, str]]) -> str:
    name, _, tag = image.partition(":")
    for rule in rules:
        if rule["name"] == name:
            return f"{rule.get('newName', name)}:{rule.get('newTag', tag or 'latest')}"
    return image


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return [spec]
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return [template["spec"]] if template else []


def build(folder: Path) -> list[dict[str, Any]]:
    """The documents ``kustomize build folder`` prints (in resource order)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml: {sorted(unknown)} not supported by tests/utils/kustomize.py")
    if kustomization.get("kind") != "Kustomization":
        raise ValueError(f"{folder}: not a Kustomization")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        if path.is_dir():
            docs.extend(build(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    rules = kustomization.get("images", [])
    for doc in docs:
        for pod in _pod_specs(doc):
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                container["image"] = _set_image(container["image"], rules)
    return docs
