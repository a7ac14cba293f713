#!/usr/bin/env python3
"""A small kustomize for deploy/k8s, as Debian 12 has no kustomize: renders a kustomization
directory (resources, images, strategic-merge patches: the features deploy/k8s uses; any
other field is an error, never silently dropped), and turns the rendered StatefulSet's pod
template into a Pod that `podman kube play` runs (podman 4.3 refuses StatefulSets).

  kustomize.py build DIR                      the rendered manifests, as kubectl apply -k sees them
  kustomize.py pod DIR --image IMG [--volume NAME=HOSTDIR]... [--env NAME=VALUE]...
"""
import argparse
import copy
import os
import sys

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}


def fail(message):
    sys.exit(f"kustomize.py: {message}")


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def merge(base, patch):
    """Strategic merge as kubectl does it for these manifests: maps merge key by key, lists
    of maps with a `name` merge entry by entry, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(item, dict) and "name" in item for item in base + patch)):
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = [i for i, existing in enumerate(out) if existing["name"] == item["name"]]
            if match:
                out[match[0]] = merge(out[match[0]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def matches(resource, target):
    for key in ("kind", "name"):
        value = resource["kind"] if key == "kind" else resource["metadata"]["name"]
        if key in target and target[key] != value:
            return False
    return True


def set_images(resources, images):
    for resource in resources:
        spec = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            for image in images:
                if image["name"] == name:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"


def build(directory):
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.exists(path):
        fail(f"{directory} has no kustomization.yaml")
    (kustomization,) = load_documents(path)
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        fail(f"{path}: fields {sorted(unknown)} are not supported here; extend kustomize.py")
    resources = []
    for entry in kustomization.get("resources", []):
        target = os.path.normpath(os.path.join(directory, entry))
        resources += build(target) if os.path.isdir(target) else load_documents(target)
    for patch in kustomization.get("patches", []):
        if set(patch) - {"path", "target"}:
            fail(f"{path}: only patches with path and target are supported")
        (body,) = load_documents(os.path.join(directory, patch["path"]))
        target = patch.get("target", {"kind": body["kind"], "name": body["metadata"]["name"]})
        hits = [i for i, resource in enumerate(resources) if matches(resource, target)]
        if not hits:
            fail(f"{path}: patch {patch['path']} matches no resource")
        for i in hits:
            resources[i] = merge(resources[i], body)
    set_images(resources, kustomization.get("images", []))
    return resources


def pod(resources, image, volumes, env):
    """The StatefulSet's first pod as a Pod: the ConfigMap inlined into env, the claim
    templates and Secrets as host directories, and no ports (they need a bridge)."""
    (statefulset,) = [r for r in resources if r["kind"] == "StatefulSet"]
    configmaps = {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}
    template = copy.deepcopy(statefulset["spec"]["template"])
    spec = template["spec"]
    for container in spec["containers"]:
        container["image"] = image
        container.pop("ports", None)
        values = {}
        for source in container.pop("envFrom", []):
            values.update(configmaps[source["configMapRef"]["name"]])
        values.update(env)
        container["env"] = [{"name": k, "value": str(v)} for k, v in values.items() if v != ""]
    claims = [t["metadata"]["name"] for t in statefulset["spec"].get("volumeClaimTemplates", [])]
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in volumes]
    for name in claims + list(volumes):
        if name not in volumes:
            fail(f"--volume {name}=HOSTDIR is needed for the pod's volume {name}")
    for name, host_dir in volumes.items():
        spec["volumes"].append({"name": name, "hostPath": {"path": host_dir, "type": "Directory"}})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{statefulset['metadata']['name']}-0", "labels": template["metadata"]["labels"]},
        "spec": spec,
    }


def pairs(items):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"'{item}' is not NAME=VALUE")
        out[name] = value
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "pod"])
    parser.add_argument("directory")
    parser.add_argument("--image")
    parser.add_argument("--volume", action="append", default=[])
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    resources = build(args.directory)
    if args.command == "build":
        yaml.safe_dump_all(resources, sys.stdout, sort_keys=False)
    else:
        if not args.image:
            fail("pod needs --image")
        yaml.safe_dump(pod(resources, args.image, pairs(args.volume), pairs(args.env)), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
