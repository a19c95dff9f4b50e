"""A run's files: written atomically, read back with errors that name the file.

Training runs and searches are killed and started again; every file they rely on to
continue (configurations, results, history rows, weights) is replaced whole, never
written in place, and a stored configuration is compared with the one asked for.
"""

import csv
import hashlib
import io
import json
import math
import os
import re


# Temporary files: `.partial-<pid>-<name>` (replace_atomically) and `.write-test-<pid>`
# (make_output_dir). A kill leaves them behind; `remove_leftovers` removes them.
PARTIAL_PREFIX = ".partial-"
_TEMPORARY_FILE = re.compile(r"\.(?:partial|write-test)-(\d+)(?:-|$)")


def replace_atomically(path, write):
    """Calls `write(temporary_path)`, then renames the temporary file to `path`.

    A reader (or a restart after a kill) sees the old file or the new one, never a part.
    The temporary name keeps `path`'s suffix (Keras checks `.weights.h5` and `.keras`).
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f"{PARTIAL_PREFIX}{os.getpid()}-{name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomically(path, value):
    def write(temporary):
        with open(temporary, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")

    replace_atomically(path, write)


def read_json(path, start_over="start over"):
    """The JSON value in `path`, or None if there is no such file.

    Raises:
        ValueError: the file is not JSON (or not text); the message names it and says to
            delete it to `start_over`.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as error:
        raise damaged(path, f"not UTF-8 text: {error.reason}", start_over) from None
    except ValueError as error:
        raise damaged(path, f"not JSON: {error}", start_over) from None


def read_json_object(path, keys=(), start_over="start over"):
    """The JSON object in `path`, or None if there is no such file.

    Raises:
        ValueError: the file is not a JSON object holding each of `keys` (a list, `{}`,
            junk); the message names it as damaged and says to delete it to `start_over`.
    """
    value = read_json(path, start_over)
    if value is None and not os.path.exists(path):
        return None
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise damaged(path, f"a JSON {kind}, not an object", start_over)
    missing = [key for key in keys if key not in value]
    if missing:
        raise damaged(path, f"no {', '.join(repr(k) for k in missing)}", start_over)
    return value


def damaged(path, problem, start_over="start over"):
    """The ValueError for a run file that cannot be used: it names the file."""
    return ValueError(f"{path} is damaged ({problem}). Delete it to {start_over}.")


def read_history(path):
    """The complete rows of a history CSV written by `EpochCSVLogger`, as dicts.

    A last line without its newline (a kill while writing it) is not a row.

    Raises:
        ValueError: the file is not CSV text; the message names it.
    """
    try:
        with open(path, newline="") as f:
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(io.StringIO(complete, newline="")))
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason})") from None
    except csv.Error as error:  # A NUL byte, ...
        raise ValueError(f"{path} is not CSV ({error})") from None


def file_sha256(path):
    """The SHA-256 of the file at `path`, in hexadecimal."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_leftovers(directory):
    """Removes the temporary files a killed process left in `directory` (not below it).

    A file whose writer (the process id in its name) still runs on this machine is kept:
    it may be writing it now.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY_FILE.match(name)
        if match and not _process_runs(int(match.group(1))):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass  # Removed by another process, or not removable: not ours to force.


def _process_runs(pid):
    if pid == os.getpid():
        return False  # This process writes its own files one at a time: a leftover.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # Another user's process.
    return True


def make_output_dir(path):
    """Creates `path` (and its parents); OSError with a clear message if it can't be written."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(f"Cannot write the output directory {os.fspath(path)!r}: {reason}.") from None


def remove_empty_dirs(path):
    """Removes `path` and the directories in it, if they hold no file."""
    for directory, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError:
            pass  # Not empty: something was written there.


def differences(stored, ours, prefix=""):
    """ "key=<stored> there, <ours> here" for each key of `ours` whose value `stored`
    does not match (floats to 1e-9, lists and tuples alike); dicts key by key."""
    found = []
    for key, value in ours.items():
        theirs = stored.get(key)
        if isinstance(value, dict) and isinstance(theirs, dict):
            found += differences(theirs, value, f"{prefix}{key}.")
        elif not _same(theirs, value):
            found.append(f"{prefix}{key}={theirs!r} there, {value!r} here")
    return found


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    return a == b
