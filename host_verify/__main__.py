"""`python3 -I <root>/host_verify/__main__.py [--only NAME,...] [--profile canary] [--jobs N] [--list]`
(or `python3 -m host_verify` with the root on the path)

Verify this host through its real endpoint: one
line per check on stderr, the report (host_verify/report.py) ALWAYS on
stdout, and on the first failed check a one-line reason and that check's
family's exit code (host_verify/failures.py). Input: the verify step's
variables (docs/host-contract.md), the payload's contract/host.env, and on
stdin the CA certificate, the verify client's certificate and key (PEM, in
that order), kept in a private directory on tmpfs removed on exit.
`--profile canary` runs the canary's named subset (checks.PROFILES) and, with
`--result`/`--textfile`, writes its result and metrics (host_verify/canary.py).
One run at a time on a host: a run waits for another's lock.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a file: python3 -I .../host_verify/__main__.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host_verify.canary import (
    HostState,
    certificate_expiries,
    follow_health,
    policy_up,
    running_sandboxes,
    write_outputs,
)
from host_verify.checks import (
    BUSYBOX_APPLETS,
    CHECKS,
    PROFILES,
    Context,
    kata_unusable_reason,
    runsc_path,
    wanted_runtimes,
)
from host_verify.clients import ContainerdNames, Ctr, Docker, Nerdctl, Runner, SystemRunner
from host_verify.engine import DEFAULT_JOBS, Outcome, build_report, run_checks, select
from host_verify.failures import Failure
from host_verify.inputs import (
    Contract,
    Paths,
    certificate_common_name,
    check_pems,
    parse_contract_env,
    read_catalog,
    read_inputs,
)
from host_verify.report import CheckResult, Report


def make_logger(script: str, host: str) -> Callable[[str], None]:
    lock = threading.Lock()

    def log(message: str) -> None:
        with lock:
            print(f"{script} [{host}]: {message}", file=sys.stderr, flush=True)

    return log


def verify_cpus(contract: Contract, max_millicpus: int) -> str:
    """The CPUs each verify container asks for: the contract's figure, or the
    stack's maximum when that is lower."""
    milli = min(contract.number("VERIFY_MILLICPUS"), max_millicpus)
    return f"{milli // 1000}.{milli % 1000:03d}"


def prepare_ctr_rootfs(work: Path, busybox: Path) -> Path:
    """busybox-static's applets in a directory ctr can run (never under /run:
    it is noexec on Debian); the sandbox's file server reaches it through work."""
    work.chmod(0o711)
    rootfs = work / "rootfs"
    for sub in ("bin", "proc", "dev", "sys", "etc", "tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin/busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    return rootfs


def hold_run_lock(root: Path, log: Callable[[str], None]) -> int:
    """One verification at a time: the canary's and the verify step's
    containers must not meet. The lock is on the payload's directory (it
    always exists, and nothing is left behind); returns the locked
    descriptor (close it to let go)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("waiting for another verification run on this host to finish")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def host_state(ctx: Context, environ: Mapping[str, str], client_cert: str) -> HostState:
    """The running host beside the checks: for the canary's result and metrics."""
    tls = Path(environ.get("FR_DOCKER_DIR") or "/etc/docker") / "tls"
    (ctx.work / "certs").mkdir(exist_ok=True)
    (ctx.work / "certs" / "canary.pem").write_text(client_cert)
    expiries = certificate_expiries(
        {"server": (tls / "server-cert.pem", 0), "stack-ca": (tls / "ca.pem", 0), "verifier-ca": (tls / "ca.pem", 1),
         "canary": (ctx.work / "certs" / "canary.pem", 0)},
        ctx.work / "certs",
    )
    return HostState(
        reboot_required=Path(ctx.contract["REBOOT_REQUIRED"]).exists(),
        policy_up=policy_up(ctx.runner, ctx.contract["AUTHZ_UNIT"]),
        certificates=expiries,
        sandboxes=running_sandboxes(ctx.docker, ctx.wanted),
        artifacts={name: row.version for name, row in ctx.catalog.items()},
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         runner_factory: Callable[[Mapping[str, str]], Runner] = SystemRunner, stdin: str | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(prog="host_verify", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", help="comma-separated check names (and what they need); default: all")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="lanes run at once (1: one check at a time)")
    parser.add_argument("--list", action="store_true", help="print the check table and exit")
    parser.add_argument("--timings", action="store_true", help="log each check's wall time on stderr")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="a named subset of the table (the canary's)")
    parser.add_argument("--result", type=Path, help="write the canary's result (JSON) here, atomically")
    parser.add_argument("--textfile", type=Path, help="write the canary's metrics (the node exporter's textfile) here")
    parser.add_argument("--interval", type=int, default=0, help="the canary timer's interval, for the metrics")
    parser.add_argument("--drain-on-failure", action="store_true",
                        help="drain the host while this run fails, resume when one passes (canary.drainOnFailure)")
    args = parser.parse_args(argv)
    if args.list:
        for c in CHECKS:
            print(f"{c.name}\tfamily={c.family}\tclient={c.client}\tstage={c.stage}\tlane={c.lane}\t"
                  f"needs={','.join(c.needs) or '-'}")
        return 0
    root = Path(environ.get("FR_ROOT") or Path(__file__).resolve().parent.parent)
    host = environ.get("FR_HOST") or socket.gethostname() or "unknown-host"
    script = environ.get("FR_SCRIPT_NAME") or "host_verify"
    log = make_logger(script, host)
    contract_path = Path(environ.get("FR_CONTRACT") or root / "contract/host.env")
    try:
        contract = Contract(parse_contract_env(contract_path.read_text(), environ))
    except (OSError, ValueError) as err:
        print(f"{script} [{host}]: FAILED: expected the contract at {contract_path}; found {err}; to fix: re-run the "
              "payload step (pulumi up)", file=sys.stderr)
        return 1
    try:
        names = [n for n in (args.only or "").split(",") if n] or None
        if args.profile:
            names = [*(names or ()), *PROFILES[args.profile]]
        checks = select(names)
    except KeyError as err:
        print(f"{script} [{host}]: unknown check {err}; known: {', '.join(c.name for c in CHECKS)}", file=sys.stderr)
        return 2
    host_kernel = os.uname().release
    paths = Paths.from_contract(root, environ, contract)
    cleanup: list[Path] = []

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    report: Report | None = None
    started = time.monotonic()
    lock: int | None = None
    try:
        lock = hold_run_lock(root, log)
        try:
            inputs = read_inputs(environ, contract, host)
            ca, cert, key = check_pems(sys.stdin.read() if stdin is None else stdin)
            try:
                owner = certificate_common_name(cert)
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                raise Failure("inputs", 2, "the verify client certificate with a common name (the policy's owner label)",
                              f"{type(err).__name__}: {err}", "check the program sends the verify certificate") from None
        except Failure as failure:
            report = Report(contract["VERIFY_SCHEMA"], host, False, host_kernel, failure.check, failure.message,
                            checks=(), versions={})
            log(f"FAILED on host {host}: {failure.message}")
            return failure.code
        paths.secret_base.mkdir(parents=True, exist_ok=True)
        paths.secret_base.chmod(0o700)
        certs = Path(tempfile.mkdtemp(prefix="pem.", dir=paths.secret_base))
        cleanup.append(certs)
        for name, pem in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
            fd = os.open(certs / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
        paths.work_base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="functions-runtime.", dir=paths.work_base))
        cleanup.append(work)
        # The docker CLI must not read or write root's ~/.docker.
        (work / "docker-config").mkdir()
        runner = runner_factory({**environ, "DOCKER_CONFIG": str(work / "docker-config")})
        catalog = read_catalog(paths.catalog) if paths.catalog.is_file() else {}
        # vm wants Kata whatever (its preflight then says why it cannot run); sandbox asks whether it can.
        kata_usable = inputs.isolation == "sandbox" and not kata_unusable_reason(runner, paths, catalog,
                                                                                 inputs.kata_hypervisor)
        wanted = wanted_runtimes(inputs.isolation, kata_usable)
        try:
            runsc = runsc_path(contract, catalog, inputs.gvisor_runsc) if "runsc" in wanted else ""
        except Failure as failure:
            report = Report(contract["VERIFY_SCHEMA"], host, False, host_kernel, failure.check, failure.message)
            log(f"FAILED on host {host}: {failure.message}")
            return failure.code
        endpoint_args = ["--tlsverify", "--tlscacert", str(certs / "ca.pem"), "--tlscert", str(certs / "cert.pem"),
                         "--tlskey", str(certs / "key.pem"), "-H", f"tcp://{inputs.endpoint_host}:{inputs.endpoint_port}"]
        limit_opts = ["--memory", f"{contract['VERIFY_MEMORY_MIB']}m", "--pids-limit", contract["VERIFY_PIDS"],
                      "--cpus", verify_cpus(contract, inputs.max_millicpus)]
        names_ = ContainerdNames(contract["CONTAINERD_VERIFY_NAMESPACE"], contract["RUNC_SHIM_RUNTIME"],
                                 contract["RUNSC_SHIM_RUNTIME"], contract["KATA_SHIM_RUNTIME"], contract["CNI_NETWORK"])
        rootfs = work / "ctr" / "rootfs"
        if any(c.name == "ctr" for c in checks) and paths.busybox.is_file():
            (work / "ctr").mkdir()
            rootfs = prepare_ctr_rootfs(work / "ctr", paths.busybox)
        ctx = Context(
            inputs=inputs, contract=contract, paths=paths, runner=runner,
            docker=Docker(runner, endpoint_args, paths.docker_socket, inputs.image, limit_opts,
                          ["--label", f"{contract['AUTHZ_OWNER_LABEL']}={owner}"]),
            ctr=Ctr(runner, names_, runsc, rootfs, paths.cni_networks),
            nerdctl=Nerdctl(runner, names_, runsc, inputs.gvisor_runsc == "release", inputs.image),
            certs=certs, work=work, host_kernel=host_kernel, wanted=wanted, runsc=runsc, catalog=catalog,
        )
        outcome = Outcome((), Failure("run", 1, "the run to finish", "it was stopped", "re-run verify"))
        try:
            outcome = run_checks(ctx, checks, log, args.jobs, args.timings)
        finally:
            report = build_report(ctx, outcome)
        if args.result or args.textfile or args.drain_on_failure:
            state = host_state(ctx, environ, cert)
            write_outputs(args.result, args.textfile, report.to_json(), state, args.interval, time.time(),
                          time.monotonic() - started)
            if args.drain_on_failure:
                healthy = report.passed and state.policy_up
                action = follow_health(Path(contract["AUTHZ_DRAIN_FILE"]), healthy, report.reason)
                if action != "unchanged":
                    log(f"host {host} {action} (canary.drainOnFailure)")
        if outcome.failure:
            log(f"FAILED on host {host}: {outcome.failure.message}")
            return outcome.failure.code
        log(f"host {host} verified: default runtime {report.default_runtime}")
        return 0
    finally:
        if report is None:
            report = Report(contract["VERIFY_SCHEMA"], host, False, host_kernel, "run",
                            "the verification stopped before its first check; see stderr",
                            checks=(CheckResult("run", "failed", "stopped"),))
        print(report.dumps(), flush=True)
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
        if lock is not None:
            os.close(lock)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
