"""What a run's output names and sizes make the server and the caller pay, judged
from the HTTP bytes and from the caller's disk.

Found by probing the landed main (2026-12-06): a run whose output held 58 MiB
of data listed 81 names of 4.79 GiB (sparse files cut to the file size limit,
each with many hard links), and fetching them filled the caller's 2 GiB disk;
one output name that is not UTF-8 made the listing a 500, so no file of the
run could be listed, fetched or shown on its page.
"""
from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from service.helpers import cli, client

from sandbox.client import files
from sandbox.client.aio import AsyncClient

MiB = 1 << 20
SPARSE = 32 * MiB
LINKS = 20

# One sparse file of SPARSE bytes holding a single data block at its end, and
# LINKS more names of it: the output's own data is a few KiB.
PLANT = ('cd "$SANDBOX_OUTPUT" && printf end | dd of=big bs=1 seek=%d conv=notrunc '
         '2>/dev/null && i=0 && while [ $i -lt %d ]; do ln big "big.$i"; i=$((i+1)); done'
         % (SPARSE - 3, LINKS))


def _blocks(root: str) -> int:
    seen, total = set(), 0
    for d, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(d, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


@pytest.mark.parametrize("how", ["sync", "async"])
def test_hard_links_are_listed_once_and_holes_stay_holes(server, tmp_path, how):
    with client(server) as c:
        run = c.run(["sh", "-c", PLANT])
        assert run.status == "ok", run.reason
        listing = c.files(run.id)
        fetched = [e for e in listing if e.kind == "file"]
        linked = [e for e in listing if e.kind == "link"]
        assert [e.path for e in fetched] == ["big"] and len(linked) == LINKS
        assert fetched[0].size == SPARSE and fetched[0].allocated < MiB
        assert {e.target for e in linked} == {"big"} and all(e.size == 0 for e in linked)

        dest = tmp_path / "dest"
        dest.mkdir()
        if how == "sync":
            written = c.download_all(run.id, str(dest))
        else:
            async def fetch() -> list[str]:
                async with AsyncClient(server.url, server.admin_token) as ac:
                    return await ac.download_all(run.id, str(dest))
            written = asyncio.run(fetch())
    assert len(written) == LINKS + 1
    st = os.stat(dest / "big")
    assert st.st_size == SPARSE and st.st_nlink == LINKS + 1
    assert (dest / "big").read_bytes()[-3:] == b"end"
    assert _blocks(str(dest)) < MiB, "the caller's disk paid for the holes"


def test_a_run_over_the_bound_is_refused_before_anything_is_written(server, tmp_path):
    with client(server) as c:
        run = c.run(["sh", "-c", PLANT])
        assert run.status == "ok", run.reason
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(files.TooLarge) as info:
            c.download_all(run.id, str(dest), max_bytes=SPARSE - 1)
        assert "max_bytes" in str(info.value) and f"{SPARSE} bytes" in str(info.value)
        assert os.listdir(dest) == []
        # the CLI: one line, exit 2, nothing written
        r = cli(server, "runs", "--server", server.url, "download", run.id, "-o", str(dest),
                "--max-bytes", "1MiB")
        err = r.stderr.decode()
        assert r.returncode == 2 and "Traceback" not in err, r
        assert "--max-bytes" in err and len(err.strip().splitlines()) == 1, err
        assert os.listdir(dest) == []


def test_a_name_that_is_not_utf8_is_listed_and_fetched_exactly(server, tmp_path):
    with client(server) as c:
        run = c.run(["sh", "-c", 'printf data > "$SANDBOX_OUTPUT/$(printf "bad\\377name")"; '
                     'printf ok > "$SANDBOX_OUTPUT/fine"'])
        assert run.status == "ok", run.reason
        r = httpx.get(f"{server.url}/v1/runs/{run.id}/files", headers=server.auth())
        assert r.status_code == 200, r.text
        items = {i["path"]: i for i in r.json()["items"]}
        assert items["bad\\xffname"]["href"] == "bad%FFname"
        assert items["fine"]["href"] == "fine"
        got = httpx.get(f"{server.url}/v1/runs/{run.id}/files/bad%FFname", headers=server.auth())
        assert got.status_code == 200 and got.content == b"data"
        # a name that only looks like it (the text, not the bytes) names nothing
        assert httpx.get(f"{server.url}/v1/runs/{run.id}/files/bad%5Cxffname",
                         headers=server.auth()).status_code == 404
        dest = tmp_path / "dest"
        dest.mkdir()
        c.download_all(run.id, str(dest))
    assert sorted(os.listdir(os.fsencode(dest))) == [b"bad\xffname", b"fine"]
    assert (dest / os.fsdecode(b"bad\xffname")).read_bytes() == b"data"
