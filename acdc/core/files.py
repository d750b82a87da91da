"""Files in and out: bounded readers and guarded, atomic writers, every failure one line.

Reading. Every file the tool reads back (circuits, MIB files, run.yaml, task files, sweep,
evaluation and comparison results, edge lists, configs) goes through `read_bytes`, and from
there `read_text`, `read_json` or `read_yaml`:

- only a regular file is read (a directory, device, FIFO or socket is refused before it is
  opened, so `/dev/zero` cannot fill memory and a FIFO cannot hang the command), and at most
  `limit` bytes of it, whatever its size claims;
- JSON nested too deeply, a number of thousands of digits, or text that is not UTF-8 is one
  line naming the file;
- YAML is parsed by a safe loader that refuses repeated keys (the last one would silently win)
  and aliases whose expansion exceeds `max_nodes` (a kilobyte "billion laughs" file would
  otherwise cost minutes and gigabytes in whoever walks it).

The caps are set by what the files hold: a settings file (run.yaml, config.json) a few
kilobytes, a result file (evaluation.json, comparison.json) at most tens of megabytes, a file
with one entry per edge of the graph (circuit.json, a MIB file, sweep.json) about 80 bytes an
edge: `MAX_GRAPH_FILE_BYTES` holds a circuit of the largest graphs a run can build.

Writing. Every output is written to a temporary file in the same directory and renamed over the
target only once complete, so a full disk, a crash or Ctrl-C leaves either the old file or the
new one, never a truncated one. `check_output` is called on every path a user names (and every
default path) before any work: an output that is a symbolic link, a directory, a device, a FIFO
or a socket is refused (a rename would replace the link or the device node, not write through
it), as is one of the command's own inputs or an existing run file (`RUN_FILES`: a run's
circuit, settings and decision log, a sweep's record), which only the command that made it
rewrites. `new_directories` removes the directories a failed command created. OS errors become
one `AcdcError` line naming the file and the cause (a full disk above all).

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
>>> write_text_atomic(target, "done").read_text()
'done'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from acdc.errors import AcdcError

CAUSES = {
    errno.ENOSPC: "no space left on the device; free some space and run the command again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run the command again",
    errno.EROFS: "the file system is read-only; choose another output directory",
    errno.EACCES: "permission denied; choose a directory you can write to",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop)",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ENAMETOOLONG: "the file name is too long",
}

MAX_SETTINGS_BYTES = 1 << 20  # run.yaml, config.json: a few kilobytes
MAX_RESULTS_BYTES = 64 << 20  # evaluation.json, comparison.json, roc.json, an SVG plot
MAX_GRAPH_FILE_BYTES = 512 << 20  # one entry an edge: a Llama-3.1-8B circuit.json is ~130 MB
MAX_YAML_NODES = 2_000_000  # scalars, lists and mappings once aliases are expanded
MAX_YAML_DEPTH = 200  # nested lists and mappings (libyaml's composer recurses in C: it crashes)

RUN_FILES: tuple[str, ...] = ("circuit.json", "run.yaml", "decisions.jsonl", "sweep.json")
"""A run's own files (and a sweep's record): never written over by another command."""


class FileError(AcdcError):
    """A file cannot be read as what it should be (missing, too large, malformed)."""


# --------------------------------------------------------------------------- reading


def _size_words(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def read_bytes(path: Path | str, what: str, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path`, or one `FileError` line: missing, not
    a regular file, larger than `limit` (`what` says what the file should be), unreadable."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except OSError as error:
        raise FileError(f"{path}: cannot read ({_cause(error, reading=True)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileError(f"{path}: is a directory; {what}")
    if not stat.S_ISREG(info.st_mode):
        raise FileError(f"{path}: is not a regular file (a device, a pipe or a socket); {what}")
    if info.st_size > limit:
        raise FileError(f"{path}: {info.st_size:,} bytes, larger than the {_size_words(limit)} "
                        f"such a file can hold; {what}")
    try:
        with open(path, "rb") as stream:  # at most the limit, whatever stat said
            data = stream.read(limit + 1)
    except OSError as error:
        raise FileError(f"{path}: cannot read ({_cause(error, reading=True)})") from None
    if len(data) > limit:
        raise FileError(f"{path}: larger than the {_size_words(limit)} such a file can hold; "
                        f"{what}")
    return data


def read_text(path: Path | str, what: str, limit: int = MAX_RESULTS_BYTES) -> str:
    """A UTF-8 text file's contents (see `read_bytes`)."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileError(f"{path}: not a text file; {what}") from None


def parse_json(text: str, source: str, what: str) -> Any:
    """`json.loads`, every failure one `FileError` line naming `source`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise FileError(f"{source}: not valid JSON (line {error.lineno}, column {error.colno}: "
                        f"{error.msg}); {what}") from None
    except RecursionError:
        raise FileError(f"{source}: not valid JSON (lists or objects nested too deeply); "
                        f"{what}") from None
    except ValueError:  # an integer of more digits than Python converts
        raise FileError(f"{source}: not valid JSON (a whole number of more than "
                        f"{sys.get_int_max_str_digits()} digits); {what}") from None


def read_json(path: Path | str, what: str, limit: int = MAX_RESULTS_BYTES) -> Any:
    """A JSON file's value (see `read_bytes` and `parse_json`)."""
    return parse_json(read_text(path, what, limit), str(path), what)


def read_yaml(path: Path | str, what: str, limit: int = MAX_SETTINGS_BYTES,
              max_nodes: int = MAX_YAML_NODES) -> Any:
    """A YAML file's value (see `read_bytes` and `parse_yaml`)."""
    return parse_yaml(read_text(path, what, limit), str(path), what, max_nodes)


def parse_yaml(text: str, source: str, what: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Plain data from YAML text (a safe loader: no Python objects), every failure one
    `FileError` line naming `source`: invalid YAML, a key given twice in one mapping, more than
    `max_nodes` values once aliases are expanded, nesting too deep, an unreadable number."""
    import yaml

    depth = _nesting_depth(text, MAX_YAML_DEPTH)  # before composing: see MAX_YAML_DEPTH
    if depth > MAX_YAML_DEPTH:
        raise FileError(f"{source}: not valid YAML (lists or mappings nested more than "
                        f"{MAX_YAML_DEPTH} deep); {what}")
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, max_nodes)
        if size > max_nodes:
            raise FileError(f"{source}: holds more than {max_nodes:,} values once its aliases "
                            f"(*name) are expanded; {what}")
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise FileError(f"{source}: not valid YAML ({_yaml_problem(error)}); {what}") from None
    except RecursionError:
        raise FileError(f"{source}: not valid YAML (lists or mappings nested too deeply); "
                        f"{what}") from None
    except ValueError as error:  # a number of thousands of digits, a date out of range
        problem = (f"a whole number of more than {sys.get_int_max_str_digits()} digits"
                   if "digits" in str(error) else " ".join(str(error).split())[:100])
        raise FileError(f"{source}: not valid YAML ({problem}); {what}") from None
    finally:
        loader.dispose()


def _nesting_depth(text: str, cap: int) -> int:
    """The deepest nesting of lists and mappings in YAML text, read from the parser's events
    (which libyaml produces without recursion), stopping once past `cap`. Invalid YAML gives
    0 here: the composer then reports it."""
    import yaml

    depth = deepest = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > cap:
                        break
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return 0
    return deepest


def _expanded_size(root: Any, cap: int) -> int:
    """How many nodes the YAML node graph holds with every alias expanded (aliases share
    nodes, so each distinct node is visited once), `cap + 1` once past `cap` or when an alias
    refers to a value that contains it (a structure no file of ours holds)."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[key] = 1
            continue
        if not children_done:
            if key in open_nodes:
                return cap + 1  # recursive: the node contains itself
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    return cap + 1
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(key)
        total = 1
        for child in children:
            total += sizes[id(child)]
            if total > cap:
                break
        sizes[key] = min(total, cap + 1)
    return sizes[id(root)]


def _loader_class() -> type:
    """A safe loader (libyaml's when installed) that refuses a key given twice."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class StrictLoader(base):  # type: ignore[misc, valid-type]
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    seen: set[Any] = set()
                    for key_node, _ in node.value:
                        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != \
                                "tag:yaml.org,2002:merge":
                            key = (key_node.tag, key_node.value)
                            if key in seen:
                                mark = key_node.start_mark
                                raise yaml.constructor.ConstructorError(
                                    None, None, f"the key {key_node.value[:60]!r} is given "
                                    f"twice (line {mark.line + 1}); keep one", mark)
                            seen.add(key)
                return super().construct_mapping(node, deep=deep)

        _LOADER = StrictLoader
    return _LOADER


_LOADER: type | None = None


def _yaml_problem(error: Any) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def _cause(error: OSError, reading: bool = False) -> str:
    if reading and error.errno == errno.EACCES:  # the advice below is for writing
        return "permission denied"
    return CAUSES.get(error.errno or 0, error.strerror or str(error))


# --------------------------------------------------------------------------- writing


def disk_error(path: Path | str, error: OSError, doing: str = "cannot write") -> AcdcError:
    """One line for an OS error on `path`."""
    return AcdcError(f"{path}: {doing} ({_cause(error, doing.startswith('cannot read'))})")


def check_output(path: Path | str, option: str = "--out", inputs: Iterable[Path | str] = (),
                 ) -> Path:
    """`path` if a command may write the file there, else one `AcdcError` line that names
    `option`: a symbolic link, a directory, a device, FIFO or socket, one of the command's own
    `inputs`, or an existing run file (`RUN_FILES`) are refused. Nothing is created."""
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise AcdcError(f"{label}: cannot be written ({_cause(error)})") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise AcdcError(f"{label}: is a symbolic link; outputs are never written through "
                            f"links: give the file it points to ({os.path.realpath(path)}) or "
                            f"another path")
        if stat.S_ISDIR(info.st_mode):
            raise AcdcError(f"{label}: is a directory; give the file to write")
        if not stat.S_ISREG(info.st_mode):
            raise AcdcError(f"{label}: is not a regular file (a device, a pipe or a socket); "
                            f"give a file path")
        for source in inputs:
            if _same_file(path, Path(source)):
                raise AcdcError(f"{label}: is this command's input {source}; choose another "
                                f"file")
        if path.name in RUN_FILES:
            raise AcdcError(f"{label}: would overwrite a run's {path.name}; choose another "
                            f"file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise AcdcError(f"{label}: {parent} is a file, not a directory")
    return path


def check_output_dir(path: Path | str, option: str = "--out") -> Path:
    """`path` if a command may create files in it: refused when it is a symbolic link, or
    exists and is not a directory."""
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if path.is_symlink():
        raise AcdcError(f"{label}: is a symbolic link; give the directory it points to "
                        f"({os.path.realpath(path)}) or another path")
    if path.exists() and not path.is_dir():
        raise AcdcError(f"{label}: is a file, not a directory; give a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AcdcError(f"{label}: {parent} is a file, not a directory")
            break
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def make_directories(path: Path | str, option: str = "--out") -> list[Path]:
    """Create the directory `path` and its missing parents; return those this call created
    (outermost first), so that a failed command can remove them (`remove_if_empty`)."""
    missing = []
    current = Path(path)
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                remove_if_empty(created)
                raise AcdcError(f"{option} {path}: {directory} is not a directory") from None
            continue
        except OSError as error:
            remove_if_empty(created)
            raise disk_error(f"{option} {path}" if option else path, error,
                             "cannot create the directory") from None
        created.append(directory)
    return created


def unique_directory(base: Path | str) -> tuple[Path, list[Path]]:
    """A new directory `base`, or `base-2`, `base-3`, ... when that is taken, created
    exclusively (two commands started in the same second never share one); returns it and the
    directories created (see `make_directories`)."""
    base = Path(base)
    created = make_directories(base.parent, "")
    for number in range(1, 10_000):
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            remove_if_empty(created)
            raise disk_error(candidate, error, "cannot create the directory") from None
        return candidate, [*created, candidate]
    remove_if_empty(created)
    raise AcdcError(f"{base}: 10,000 directories of this name exist; give --out")


def remove_if_empty(directories: list[Path]) -> None:
    """Remove `directories` (innermost first) where they are empty: what a failed command
    created and left nothing in."""
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty


@contextlib.contextmanager
def output_directory(path: Path | str | None, default: Path | str) -> Iterator[Path]:
    """The directory a command writes its files into: `path` (checked, created with its
    parents when missing) or, when None, `default` made unique (`unique_directory`). When the
    block fails, a directory created here is removed with what the block wrote into it, so a
    failed command leaves nothing behind; an existing `--out` directory is left as it was."""
    if path is None:
        directory, created = unique_directory(default)
    else:
        directory = check_output_dir(path)
        created = make_directories(directory)
    try:
        yield directory
    except BaseException:
        if created and created[-1] == directory:
            shutil.rmtree(directory, ignore_errors=True)
        remove_if_empty(created)
        raise


@contextlib.contextmanager
def new_directories(*paths: Path | str) -> Iterator[None]:
    """Create `paths` (and their parents) on entering; when the block fails, remove those of
    them that this call created and that are still empty, so a failed command leaves no empty
    output folders behind."""
    created: list[Path] = []
    try:
        for path in paths:
            created += make_directories(path)
        yield
    except BaseException:
        remove_if_empty(created)
        raise


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path`; renamed to `path` when the block succeeds, removed
    when it fails. A `path` that has become a link or a special file meanwhile is not
    replaced. OS errors become one-line `AcdcError`s."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp",
                                    dir=path.parent)
        with contextlib.suppress(OSError):  # mkstemp's 0600 would hide outputs from others
            os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    except OSError as error:
        raise disk_error(path, error) from None
    temporary = Path(name)
    try:
        yield temporary
        _refuse_special(path)
        os.replace(temporary, path)
    except OSError as error:
        raise disk_error(path, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _refuse_special(path: Path) -> None:
    """The last check before a rename: never replace a link, a device or a directory."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise AcdcError(f"{path}: is {kind}; it was not replaced")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(path)


def write_json_atomic(path: Path | str, value: Any, indent: int | None = 1) -> Path:
    """Write `value` as strict JSON (no NaN or infinity: they are refused, not written as
    invalid JSON) to `path` atomically."""
    try:
        text = json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        raise AcdcError(f"{path}: a value to write is not a finite number; nothing was "
                        f"written") from None
    return write_text_atomic(path, text + "\n")
