"""GoldenImage: the Cloud hosts' own snapshot, built by the program.

A builder is an ordinary Cloud server (`components/machine.py`) running the
pipeline's host-independent steps (`steps_through("install")`: nothing of a
host's identity, addresses, keys or certificates) and the seal step; a
snapshot of it is labelled with the fingerprint of what was installed. The
hosts boot from that snapshot, so their install step finds everything in
place and downloads nothing.

Pulumi cannot create a server and delete it within one `up` with ordinary
resources, so a build spans two: the `up` that finds no image with the
current fingerprint (a Hetzner lookup) declares the builder and the
snapshot; the next `up` finds the image and no longer declares the builder,
which Pulumi then deletes. The snapshot is `retain_on_delete`, so leaving
the program keeps the image in Hetzner; the retention command prunes old
images beyond `goldenImage.keep` (components/image_retention.py). The
trade-off, written down in docs/golden-images.md: the `up` after a build
plans exactly the builder's removal; a dynamic provider could do it in one
`up`, but would run the steps outside the pipeline table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud

from components.contract import CONTRACT_ENV
from components.image_retention import GOLDEN_LABEL, STACK_LABEL
from components.machine import GOLDEN_NAME_DIGITS, CloudServerArgs, create_cloud_server
from components.payload import SCRIPTS_DIR, Payload
from components.pipeline import (
    LIB,
    SEAL_STEP,
    VARIABLES,
    PipelineInputs,
    StdinMaterial,
    fingerprint,
    run_steps,
    step_env,
    steps_through,
)
from components.settings import HostSpec, Settings, stack_slug

# The builder's steps: the host-independent prefix of the table, then the seal.
GOLDEN_STEPS = (*steps_through("install"), SEAL_STEP)
# Hetzner label values are at most 63 characters: the fingerprint's first 32 hex digits.
LABEL_DIGITS = 32
# Variables whose value says nothing about what is installed: where files
# come from (content is pinned by hash), and the builder's own facts.
NOT_CONTENT = frozenset(
    {"FR_HOST", "ARTIFACT_MIRROR", "ARTIFACT_PEERS", "ARTIFACT_SHARE", "PAYLOAD_SHA256", "PRIVATE_ADDRESS"}
)


def image_period(today: dt.date, max_age_days: int) -> int:
    """The build period `today` falls in: a new image each `max_age_days`.

    Counted from 1970-01-01, so two runs on the same day agree and the
    inputs stay deterministic between periods.
    """
    return (today - dt.date(1970, 1, 1)).days // max_age_days


def golden_fingerprint(settings: Settings, spec: HostSpec, payload: Payload, period: int) -> str:
    """What an image holds: the builder steps' scripts, reads and variables,
    the base image and the build period."""
    inputs = PipelineInputs(name="golden", settings=settings, spec=spec, payload=payload, private_address="")
    parts: list[str | bytes] = [spec.image or "", str(period), payload.files[LIB], payload.files[CONTRACT_ENV]]
    for step in GOLDEN_STEPS:
        parts.append(step.name)
        parts.append(payload.files[f"scripts/{step.script}"])
        parts.extend(payload.files[r] for r in step.reads)
        for name in step_env(step):
            if name not in NOT_CONTENT:
                value = VARIABLES[name].value(inputs)
                parts.append(f"{name}={value}" if isinstance(value, str) else name)
    return fingerprint(*parts)


@dataclass(frozen=True)
class GoldenImageArgs:
    settings: Settings
    payload: Payload
    cloud: CloudServerArgs
    private_key: pulumi.Input[str]
    # The builder's type, location and base image: the first Cloud group's.
    template: HostSpec
    today: dt.date | None = None
    # hcloud.get_images by default; a stand-in in tests.
    find_images: Callable[..., Any] | None = None


class GoldenImage(pulumi.ComponentResource):
    """The snapshot the Cloud hosts boot from, and its builder while it is built."""

    image_id: pulumi.Output[str]
    fingerprint: str
    # The id Hetzner already has for this fingerprint; None while it is built.
    found_image: str | None

    def __init__(self, name: str, args: GoldenImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("functions-runtime:index:GoldenImage", name, None, opts)
        settings = args.settings
        slug = stack_slug(settings.stack)
        today = args.today or dt.datetime.now(dt.UTC).date()
        period = image_period(today, settings.golden_image.max_age_days)
        self.fingerprint = golden_fingerprint(settings, args.template, args.payload, period)
        label = self.fingerprint[:LABEL_DIGITS]
        labels = {STACK_LABEL: slug, GOLDEN_LABEL: label}
        short = self.fingerprint[:GOLDEN_NAME_DIGITS]

        found = self._existing_image(settings, f"{STACK_LABEL}={slug},{GOLDEN_LABEL}={label}", args.find_images)
        self.found_image = found
        snapshot: hcloud.Snapshot | None = None
        if found is not None:
            self.image_id = pulumi.Output.from_input(found)
        else:
            snapshot = self._build(name, args, labels, short)
            self.image_id = snapshot.id
        retention = command.local.Command(
            f"{name}-retention",
            # The module is stdlib only; the token comes from the environment
            # `pulumi up` runs in (HCLOUD_TOKEN), never from an input.
            create=self.image_id.apply(
                lambda image: f"python3 -m components.image_retention --stack {slug} "
                f"--keep {settings.golden_image.keep} --protect {image}"
            ),
            triggers=[label, settings.golden_image.keep],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[snapshot] if snapshot is not None else []),
        )
        self.register_outputs(
            {"imageId": self.image_id, "fingerprint": self.fingerprint, "retention": retention.stdout}
        )

    @staticmethod
    def _existing_image(settings: Settings, selector: str, find: Callable[..., Any] | None) -> str | None:
        """The id of an available image with this fingerprint, if Hetzner has one.

        Without a token nothing can be asked: preview shows a build, as the
        first `up` with that fingerprint would do.
        """
        if not settings.hcloud_token_set:
            return None
        images = (find or hcloud.get_images)(with_selector=selector, with_statuses=["available"], most_recent=True)
        for image in images.images or []:
            return str(image.id)
        return None

    def _build(self, name: str, args: GoldenImageArgs, labels: dict[str, str], short: str) -> hcloud.Snapshot:
        """Builder server, steps through install, seal, snapshot."""
        builder_name = f"{name}-builder-{short}"
        spec = replace(
            args.template,
            name=builder_name,
            server_name=f"{stack_slug(args.settings.stack)}-golden-{short}",
            placement_index=None,
        )
        cloud = replace(args.cloud, labels={**args.cloud.labels, **labels, "functions-runtime-role": "builder"})
        machine = create_cloud_server(self, builder_name, spec, cloud, args.private_key, in_placement_group=False)
        inputs = PipelineInputs(
            name=builder_name,
            settings=args.settings,
            spec=spec,
            payload=args.payload,
            private_address=machine.private_address,
        )
        stdin = {"payload": StdinMaterial(args.payload.archive_base64)}
        steps = run_steps(self, inputs, machine, GOLDEN_STEPS, stdin, SCRIPTS_DIR)
        return hcloud.Snapshot(
            f"{name}-{short}",
            server_id=machine.id.apply(int),
            description=f"functions-runtime golden image {short} ({args.settings.stack})",
            labels=labels,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[steps[SEAL_STEP.name]],
                # Leaving the program (the next `up`, or a newer image) keeps
                # the image for rollback; the retention command prunes it.
                retain_on_delete=True,
            ),
        )
