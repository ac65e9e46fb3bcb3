"""The type of data that crosses a process boundary as JSON, for annotations.

`JSON` is what `json.loads` can return; a module boundary that takes or gives
such data says so with it instead of `Any`, so the type checker makes the
receiving side look before it uses a value (tests/test_typecheck.py forbids
`Any` in the start path's public signatures).
"""
from __future__ import annotations

from typing import Union

JSON = Union[None, bool, int, float, str, list["JSON"], dict[str, "JSON"]]
JSONObject = dict[str, JSON]
