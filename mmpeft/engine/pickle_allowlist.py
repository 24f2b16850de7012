"""What a weights-only load may build besides tensors: mmengine's message hub
and numpy numbers, rebuilt from checked plain data.

mmengine's training checkpoints pickle the message hub's ``HistoryBuffer``s
(two numpy arrays and the buffer's statistics methods) and numpy scalars.
Allow-listing those classes themselves would let a file call their
constructors and ``__setstate__`` with any state: ``HistoryBuffer.
__setstate__`` updates the class-level statistics table (a crafted file makes
every buffer's 'mean' return the max, for the whole process), ``np.ndarray``
builds object arrays, or arrays of 2^40 elements, or, with crafted dtype
flags, float arrays numpy frees as object pointers (a crash).

So the global names a file may use map to the stand-ins below. They only
record plain data after checking it (numbers, bytes of a numeric dtype whose
length fits the shape, the four stock statistics by name), and
:func:`rebuild` then makes the real objects with public constructors:
``HistoryBuffer(log_history, count_history, max_length)``, arrays with
``np.frombuffer``. Anything else raises :class:`RefusedState`.
"""
import math
import pickle
from typing import Any, Dict, List, Tuple

import numpy as np

HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'
STATISTICS = ('min', 'max', 'current', 'mean')
_BUFFER_KEYS = {'max_length', '_log_history', '_count_history',
                'statistics_methods'}
REFUSED = 'mmpeft refused'  # kept in torch's re-raised message


class RefusedState(pickle.UnpicklingError):
    """A file builds message-hub or numpy state that is not what mmengine
    writes: crafted or corrupt."""

    def __init__(self, reason: str):
        super().__init__(f'{REFUSED}: {reason}')


class _StandIn:
    """Built from a file; inert until :func:`rebuild` checks it. Stand-ins
    take no constructor arguments (a file may call the allowed names with
    any), and pickle's NEWOBJ skips ``__init__``: defaults are class-level."""

    pickled_as = None  # the global name files use for it, if any

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            name = self.pickled_as or type(self).__name__
            raise RefusedState(f'{name} called with {_short(args)}')

    def __setstate__(self, state) -> None:
        raise RefusedState(f'state given to a {type(self).__name__}')


class NdarrayName(_StandIn):
    """What the name ``numpy.ndarray`` means in a file: a tag for
    ``_reconstruct``, not the class (whose constructor allocates any size)."""
    pickled_as = 'numpy.ndarray'


class NumpyDtype(_StandIn):
    """``numpy.dtype(code, align, copy)``: numeric codes only; its BUILD
    gives the byte order, and every other field must be a plain number's."""
    dtype = None
    built = False

    def __setstate__(self, state) -> None:
        if self.dtype is None or self.built:
            raise RefusedState('numpy dtype state without a dtype, or twice')
        # (version, byte order, subarray, names, fields, elsize, alignment,
        #  flags[, metadata]): numpy's layout for a plain number.
        if not (isinstance(state, tuple) and len(state) in (8, 9)
                and state[0] in (3, 4) and state[1] in ('<', '>', '|', '=')
                and state[2:5] == (None, None, None)
                and state[5:8] == (-1, -1, 0) and state[8:] in ((), (None, ))):
            raise RefusedState(f'numpy dtype {self.dtype} with the state '
                               f'{_short(state)} (not a plain number\'s)')
        if state[1] in '<>':
            self.dtype = self.dtype.newbyteorder(state[1])
        self.built = True


class NumpyArray(_StandIn):
    """``numpy.core.multiarray._reconstruct``'s result; its BUILD gives
    (version, shape, dtype, Fortran order, raw bytes)."""
    value = None

    def __setstate__(self, state) -> None:
        if self.value is not None:
            raise RefusedState('numpy array state given twice')
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1
                and isinstance(state[1], tuple)):
            raise RefusedState(f'numpy array state {_short(state)}')
        _, shape, dtype, fortran, raw = state
        dtype = _built_dtype(dtype)
        if len(shape) > 32 or not all(
                type(n) is int and n >= 0 for n in shape):
            raise RefusedState(f'numpy array shape {_short(shape)}')
        if type(fortran) is not bool or not isinstance(raw, bytes):
            raise RefusedState('numpy array with an order flag '
                               f'{_short(fortran)} or data of type '
                               f'{type(raw).__name__} (a {dtype} array holds '
                               'bytes)')
        size = math.prod(shape) * dtype.itemsize
        if size != len(raw):
            raise RefusedState(
                f'numpy array of shape {shape} and dtype {dtype} declares '
                f'{size} bytes but holds {len(raw)}')
        self.value = np.frombuffer(raw, dtype).reshape(
            shape, order='F' if fortran else 'C').copy(order='K')


class StatisticRef(_StandIn):
    """``getattr(HistoryBuffer, name)`` for a stock statistic: a name."""
    name = None


class HistoryBufferRecord(_StandIn):
    """What the name ``HistoryBuffer`` builds: its state, checked."""
    pickled_as = 'HistoryBuffer'
    state = None

    def __setstate__(self, state) -> None:
        if self.state is not None:
            raise RefusedState('HistoryBuffer state given twice')
        if not isinstance(state, dict) or not set(state) <= _BUFFER_KEYS:
            keys = sorted(map(repr, state)) if isinstance(state, dict) else \
                type(state).__name__
            raise RefusedState(f'HistoryBuffer state {keys} (mmengine writes '
                               f'{sorted(_BUFFER_KEYS)})')
        histories = []
        for key in ('_log_history', '_count_history'):
            array = state.get(key)
            if not (isinstance(array, NumpyArray) and array.value is not None
                    and array.value.ndim == 1):
                raise RefusedState(f'HistoryBuffer {key} of type '
                                   f'{type(array).__name__} (a 1-D numeric '
                                   'numpy array)')
            histories.append(array.value)
        if len(histories[0]) != len(histories[1]):
            raise RefusedState('HistoryBuffer histories of different lengths')
        max_length = state.get('max_length', 1000000)
        if type(max_length) is not int or max_length < 1:
            raise RefusedState(
                f'HistoryBuffer max_length {_short(max_length)}')
        methods = state.get('statistics_methods', {})
        if not isinstance(methods, dict):
            raise RefusedState('HistoryBuffer statistics_methods of type '
                               f'{type(methods).__name__}')
        for name, method in methods.items():
            # The table is class-level: a file must not redefine a name.
            if not isinstance(method, StatisticRef) or method.name != name:
                target = getattr(method, 'name', type(method).__name__)
                raise RefusedState(
                    f'HistoryBuffer statistic {name!r} mapped to {target!r}: '
                    'a file may not change what a statistic computes')
        self.state = (histories[0], histories[1], max_length)


def _reconstruct(cls, shape, code) -> NumpyArray:
    if cls is not NdarrayName:
        raise RefusedState(f'_reconstruct of {_short(cls)}')
    return NumpyArray()


def _numpy_dtype(code, align=False, copy=True) -> NumpyDtype:
    dtype = NumpyDtype()
    dtype.dtype = _numeric_dtype(code)
    return dtype


def _numpy_scalar(dtype, raw) -> np.generic:
    dtype = _built_dtype(dtype)
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise RefusedState(f'numpy {dtype} scalar from {_short(raw)}')
    return np.frombuffer(raw, dtype)[0]


def _statistic(owner, name) -> StatisticRef:
    """``builtins.getattr`` as checkpoints may use it: only the stock
    statistics of ``HistoryBuffer`` (the real ``getattr`` reaches any
    attribute of any allowed object)."""
    if owner is HistoryBufferRecord and name in STATISTICS:
        ref = StatisticRef()
        ref.name = name
        return ref
    raise RefusedState(
        f'builtins.getattr of ({_short(owner)}, {_short(name)}): checkpoints '
        f'may only use it for HistoryBuffer.{"/".join(STATISTICS)}')


def _numeric_dtype(code) -> np.dtype:
    if isinstance(code, str):
        try:
            dtype = np.dtype(code)
        except TypeError:
            dtype = None
        if dtype is not None and dtype.kind in 'biufc' and \
                dtype.fields is None and dtype.subdtype is None:
            return dtype
    raise RefusedState(f'numpy dtype {_short(code)} (only numbers: an object '
                       'array would hold arbitrary objects)')


def _built_dtype(dtype) -> np.dtype:
    if isinstance(dtype, NumpyDtype) and dtype.built:
        return dtype.dtype
    raise RefusedState(f'numpy data of dtype {_short(dtype)}')


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def safe_globals() -> List[Tuple[Any, str]]:
    """``(stand-in, global name)`` pairs for ``torch.serialization.
    safe_globals``: the names mmengine's training checkpoints use. Files
    written with numpy 2 name ``numpy._core``."""
    pairs = [(HistoryBufferRecord, HISTORY_BUFFER),
             (NdarrayName, 'numpy.ndarray'), (_numpy_dtype, 'numpy.dtype'),
             (_statistic, 'builtins.getattr')]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs += [(_reconstruct, f'{module}._reconstruct'),
                  (_numpy_scalar, f'{module}.scalar')]
    # BUILD needs the stand-in's own type in the allow-list.
    pairs += [(cls, f'{__name__}.{cls.__name__}')
              for cls in (NumpyDtype, NumpyArray)]
    return pairs


def rebuild(obj):
    """``obj`` as loaded with :func:`safe_globals`, the stand-ins replaced by
    real objects (containers are edited in place, tuples rebuilt). Raises
    :class:`RefusedState` for a stand-in left incomplete."""
    return _Rebuilder().rebuild(obj)


class _Rebuilder:

    def __init__(self):
        self.done: Dict[int, Any] = {}

    def rebuild(self, obj):
        if isinstance(obj, (str, bytes, int, float, bool, type(None))) or \
                type(obj).__module__.startswith('torch'):
            return obj
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if isinstance(obj, _StandIn):
            self.done[key] = value = self.real(obj)
            return value
        self.done[key] = obj
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, _StandIn):
                    raise RefusedState(f'a {type(k).__name__} as a dict key')
                obj[k] = self.rebuild(v)
        elif isinstance(obj, list):
            obj[:] = [self.rebuild(v) for v in obj]
        elif type(obj) in (tuple, set, frozenset):
            obj = type(obj)(self.rebuild(v) for v in obj)
            self.done[key] = obj
        return obj

    @staticmethod
    def real(stand_in: _StandIn):
        if isinstance(stand_in, NumpyArray) and stand_in.value is not None:
            return stand_in.value
        if isinstance(stand_in, NumpyDtype) and stand_in.built:
            return stand_in.dtype
        if isinstance(stand_in, StatisticRef):
            from mmengine.logging import HistoryBuffer
            return getattr(HistoryBuffer, stand_in.name)
        if isinstance(stand_in, HistoryBufferRecord) and stand_in.state:
            from mmengine.logging import HistoryBuffer
            return HistoryBuffer(*stand_in.state)
        raise RefusedState(f'an incomplete {type(stand_in).__name__}')
