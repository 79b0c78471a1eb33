"""XGBoost's own C prediction calls for the matrix path, with their arguments built once.

``Booster.inplace_predict``, ``DMatrix(...)`` and ``Booster.predict`` spend 0.1-0.35 ms a call
in Python (argument dispatch, JSON, an array class built for every output), several times
the C work for the one row of a served request. These are the same C functions the wrapper
calls (``XGBoosterPredictFromDense``, ``XGDMatrixCreateFromDense``,
``XGBoosterPredictFromDMatrix``), so the numbers are the same to the bit (tests hold them
equal to the wrapper's); only the Python around them is gone. Where the library's C handle
is not reachable (a future xgboost that moves it), the wrapper is used instead.
"""

from __future__ import annotations

import ctypes
import json
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import xgboost as xgb

# The wrapper's own prediction arguments (xgboost.core: inplace_predict, Booster.predict).
_PREDICT_BASE = {"training": False, "iteration_begin": 0, "iteration_end": 0, "strict_shape": False}
_INPLACE_VALUE = json.dumps({"type": 0, **_PREDICT_BASE, "missing": float("nan"), "cache_id": 0}).encode()
_VALUE = json.dumps({"type": 0, **_PREDICT_BASE}).encode()
_MARGIN = json.dumps({"type": 1, **_PREDICT_BASE}).encode()
_CONTRIBUTIONS = json.dumps({"type": 2, **_PREDICT_BASE}).encode()


class NativePredictor:
    """One booster's predictions from float32 matrices through the C API."""

    def __init__(self, booster: xgb.Booster, feature_types: list[str]):
        from xgboost.core import _LIB, _check_call, c_bst_ulong

        # The handle only: a predictor lives as long as its booster (the weak cache below) and
        # must not keep it alive.
        self._handle = booster.handle
        self._lib, self._check, self._ulong = _LIB, _check_call, c_bst_ulong
        self._types = (ctypes.c_char_p * len(feature_types))(*[t.encode() for t in feature_types])
        self._type_count = c_bst_ulong(len(feature_types))

    @staticmethod
    def _interface(matrix: np.ndarray) -> bytes:
        # The array interface the wrapper writes for a C-contiguous float32 matrix.
        rows, columns = matrix.shape
        return b'{"data": [%d, true], "shape": [%d, %d], "strides": null, "typestr": "<f4", "version": 3}' % (
            matrix.ctypes.data, rows, columns)

    def _output(self, call, *arguments) -> np.ndarray:
        import numpy as np

        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        values = ctypes.POINTER(ctypes.c_float)()
        self._check(call(*arguments, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(values)))
        extent = tuple(int(shape[i]) for i in range(dims.value))
        count = 1
        for size in extent:
            count *= size
        # The C buffer is the library's (per thread, reused by the next call): copied out now.
        return np.frombuffer(ctypes.string_at(values, 4 * count), dtype=np.float32).reshape(extent)

    def value(self, matrix: np.ndarray) -> np.ndarray:
        """``inplace_predict(matrix)``: probabilities, float32."""
        if not len(matrix):
            return self._empty(matrix, _INPLACE_VALUE)
        return self._output(self._lib.XGBoosterPredictFromDense, self._handle, self._interface(matrix),
                            _INPLACE_VALUE, ctypes.c_void_p())

    def margin(self, matrix: np.ndarray, nthread: int) -> np.ndarray:
        """``predict(DMatrix(matrix), output_margin=True)``, float32."""
        return self._from_dmatrix(matrix, nthread, _MARGIN)[0]

    def contributions_and_margin(self, matrix: np.ndarray, nthread: int) -> tuple[np.ndarray, np.ndarray]:
        """``predict(DMatrix(matrix), pred_contribs=True)`` (the bias last) and
        ``predict(..., output_margin=True)`` of the same DMatrix, float32."""
        contributions, margin = self._from_dmatrix(matrix, nthread, _CONTRIBUTIONS, _MARGIN)
        return contributions, margin

    def contributions_and_value(self, matrix: np.ndarray, nthread: int) -> tuple[np.ndarray, np.ndarray]:
        """The contributions and ``predict(DMatrix(matrix))`` (probabilities) of one DMatrix:
        building it is most of the cost for a few rows, inplace prediction as much again."""
        contributions, value = self._from_dmatrix(matrix, nthread, _CONTRIBUTIONS, _VALUE)
        return contributions, value

    @staticmethod
    def _empty(matrix: np.ndarray, prediction: bytes) -> np.ndarray:
        # No rows: the wrapper's shapes ((0,), or (0, features + 1) for contributions); the C
        # library answers (0, 0) and warns about an empty dataset.
        import numpy as np

        return np.zeros((0, matrix.shape[1] + 1) if prediction is _CONTRIBUTIONS else (0,), dtype=np.float32)

    def _from_dmatrix(self, matrix: np.ndarray, nthread: int, *predictions: bytes) -> list[np.ndarray]:
        if not len(matrix):
            return [self._empty(matrix, prediction) for prediction in predictions]
        handle = ctypes.c_void_p()
        config = json.dumps({"missing": float("nan"), "nthread": int(nthread), "data_split_mode": 0}).encode()
        self._check(self._lib.XGDMatrixCreateFromDense(self._interface(matrix), config, ctypes.byref(handle)))
        try:
            self._check(self._lib.XGDMatrixSetStrFeatureInfo(handle, b"feature_type", self._types, self._type_count))
            return [self._output(self._lib.XGBoosterPredictFromDMatrix, self._handle, handle, prediction)
                    for prediction in predictions]
        finally:
            self._check(self._lib.XGDMatrixFree(handle))


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def native_predictor(booster: xgb.Booster, feature_types: Callable[[], list[str]]) -> NativePredictor | None:
    """The booster's ``NativePredictor`` (built on first use, with ``feature_types()``), or None
    where xgboost's C library handle is not where this module expects it."""
    predictor = _PREDICTORS.get(booster)
    if predictor is None:
        try:
            predictor = NativePredictor(booster, feature_types())
        except ImportError:
            return None
        _PREDICTORS[booster] = predictor
    return predictor
