"""A SHA-256 beside every checkpoint mmpeft writes, checked when it is read.

``iter_8.pth`` gets ``iter_8.pth.sha256`` (``sha256sum`` format, so
``sha256sum -c iter_8.pth.sha256`` checks it too), written from the bytes on
disk before the checkpoint takes its final name. A file whose bytes no
longer match (a flipped bit on disk or in a copy, an edit) is refused when
loaded, naming it; a checkpoint without the file (older ones, other tools')
loads unchecked. The digest is replaced together with its checkpoint: the old
one is moved aside first, so a save killed in between leaves a checkpoint
without a digest, never a checkpoint with a wrong one.
"""
import hashlib
import os
import os.path as osp
import re
import uuid
from typing import Optional

SUFFIX = '.sha256'
_LINE = re.compile(r'^([0-9a-f]{64}) [ *](.+)\n?$')


def digest_path(path: str) -> str:
    return str(path) + SUFFIX


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            digest.update(block)
    return digest.hexdigest()


def replace_with_digest(tmp: str, path: str) -> None:
    """``os.replace(tmp, path)`` (``tmp`` complete and synced), with
    ``path.sha256`` recorded from ``tmp``'s bytes. The old record is moved
    aside first (and back if the replace fails): a kill at any point leaves
    either no record or the right one."""
    directory, name = osp.split(osp.abspath(path))
    record = digest_path(path)
    new = _temp_name(directory, name)
    aside = _temp_name(directory, name) if osp.exists(record) else None
    try:
        with open(new, 'x') as f:
            f.write(f'{file_sha256(tmp)}  {name}\n')
            f.flush()
            os.fsync(f.fileno())
        if aside:
            os.replace(record, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside:
                os.replace(aside, record)
            raise
        os.replace(new, record)
    finally:
        for leftover in (new, aside):
            if leftover and osp.exists(leftover):
                os.remove(leftover)


def _temp_name(directory: str, name: str) -> str:
    """A name WorkDirLockHook cleans up if a kill leaves it behind."""
    return osp.join(directory, f'.{name}{SUFFIX}.{uuid.uuid4().hex[:8]}.tmp')


def recorded_sha256(path: str) -> Optional[str]:
    """The digest recorded beside ``path``, None if there is none. A digest
    file that is not one is an error naming it."""
    record = digest_path(path)
    if not osp.isfile(record):
        return None
    with open(record, encoding='utf-8', errors='replace') as f:
        match = _LINE.match(f.read(4096))
    if match is None:
        raise ValueError(
            f'{record} is not a SHA-256 record ("<64 hex digits>  <file>"): '
            f'it cannot check {path}. Delete it to load the checkpoint '
            'unchecked.')
    return match.group(1)


def remove_orphan_digests(directory: str) -> None:
    """Remove the ``X.sha256`` files of ``directory`` whose ``X`` is gone
    (mmengine's ``max_keep_ckpts`` deletes old checkpoints, not these)."""
    for name in os.listdir(directory):
        path = osp.join(directory, name)
        if name.endswith(SUFFIX) and not name.startswith('.') and \
                not osp.exists(path[:-len(SUFFIX)]) and osp.isfile(path):
            try:
                with open(path, encoding='utf-8', errors='replace') as f:
                    match = _LINE.match(f.read(4096))
            except OSError:
                continue
            if match and match.group(2) == name[:-len(SUFFIX)]:
                os.remove(path)
