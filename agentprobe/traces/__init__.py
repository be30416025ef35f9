"""Portable traces: a run as one self-contained, versioned JSON file, or as HAR 1.2."""

from __future__ import annotations

FORMAT = "agentprobe-trace"
VERSION = 1


class TraceError(Exception):
    """A trace file a user must fix or upgrade for; the message names the file."""


def load_file(db_path, path, *, label: str | None = None) -> str:
    """Import a trace or HAR file into the database at db_path, all or nothing; the run id.

    One transaction (BEGIN IMMEDIATE ... COMMIT) holds the whole import: any error rolls it back,
    and a database the import created is removed again, so a failed import leaves no trace.
    A trace whose run is already in the database is checked but not imported twice: its id is
    returned, so `replay --trace` and `diff` can be run on the same file again and again.
    """
    from pathlib import Path

    from .import_json import check_header, load, read_run
    from .stream import open_trace, skeleton

    path, db_path = Path(path), Path(db_path)
    with open_trace(path) as f:
        sk = skeleton(f, path)
        is_har = sk.kind == "map" and sk.top.get("log") == "map" and "format" not in sk.top
        if is_har:
            if sk.duplicates:
                raise TraceError(f"{path}: key {sk.duplicates[0]} appears more than once")
            if sk.log.get("entries") != "array":
                raise TraceError(f"{path}: HAR file has no log.entries list")
        else:
            if sk.kind != "map":
                raise TraceError(f"{path} is not an agentprobe trace or a HAR file")
            check_header(sk, path)
            run = read_run(f, path)
            if label is not None:
                run["label"] = label
        with import_transaction(db_path) as conn:
            if is_har:
                from .har import load_har

                return load_har(conn, f, path, label=label)
            existing = conn.execute("SELECT label FROM runs WHERE id = ?", [run["id"]]).fetchone()
            exists = existing is not None
            if exists and label is not None and existing[0] != label:
                raise TraceError(f"{path}: run {run['id']} is already in this database, labelled {existing[0]!r},"
                                 f" and is not imported again, so label {label!r} would be ignored: import it into"
                                 " another database to label it")
            load(conn, f, path, run, write=not exists)
            return run["id"]


def read_file(path) -> dict:
    """A trace file checked as `import` checks it, as a dict (run, calls, bodies, prompts), for
    the small files read whole: a test's cassette. A HAR file is refused."""
    from pathlib import Path

    from .import_json import bodies_of, calls_of, check_header, prompts_of, read_run
    from .stream import open_trace, skeleton

    path = Path(path)
    with open_trace(path) as f:
        sk = skeleton(f, path)
        if sk.kind == "map" and sk.top.get("log") == "map" and "format" not in sk.top:
            raise TraceError(f"{path} is a HAR file, not an agentprobe trace")
        if sk.kind != "map":
            raise TraceError(f"{path} is not an agentprobe trace or a HAR file")
        check_header(sk, path)
        run = read_run(f, path)
        return {"run": run, "calls": [call for _, call in calls_of(f, path, run["id"])],
                "bodies": {body_id: body for body_id, body, _ in bodies_of(f, path)},
                "prompts": dict(prompts_of(f, path))}


def import_transaction(db_path):
    """A read-write connection inside BEGIN IMMEDIATE: COMMIT on success; on any error ROLLBACK,
    and the database file removed if this import created it."""
    import contextlib

    from ..store.db import connect

    @contextlib.contextmanager
    def transaction():
        existed = db_path.exists()
        made_dir = not db_path.parent.exists()
        conn = None
        try:
            conn = connect(db_path, create=True)
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn is not None:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
                conn = None
            if not existed:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
                if made_dir:
                    with contextlib.suppress(OSError):
                        db_path.parent.rmdir()
            raise
        finally:
            if conn is not None:
                conn.close()

    return transaction()
