"""A corpus of malformed Dockerfiles: hand-written cases for each kind of mistake, plus mutations
(truncations, doubled and dropped bytes) of the conformance suite's Dockerfiles."""

from __future__ import annotations

import random
from pathlib import Path

from tests.conftest import conformance_root

HANDWRITTEN: dict[str, bytes] = {
    "empty": b"",
    "only comments": b"# nothing\n# here\n",
    "only blank lines": b"\n\n  \n\t\n",
    "no FROM": b"RUN true\n",
    "unknown instruction": b"FROM scratch\nCOPPY a b\n",
    "lower-case typo": b"FROM scratch\nrnu true\n",
    "FROM without image": b"FROM\n",
    "FROM two words": b"FROM a b\n",
    "FROM AS without name": b"FROM scratch AS\n",
    "bad stage name": b"FROM scratch AS 1x\n",
    "duplicate stage": b"FROM scratch AS a\nFROM scratch AS a\n",
    "unterminated heredoc": b"FROM scratch\nRUN <<EOF\necho hi\n",
    "heredoc destination": b"FROM scratch\nCOPY a <<EOF\nx\nEOF\n",
    "JSON with a number": b'FROM scratch\nCMD ["a", 1]\n',
    "JSON with an object": b'FROM scratch\nENTRYPOINT [{"a": 1}]\n',
    "unclosed JSON": b'FROM scratch\nCMD ["a"\n',
    "ENV without value": b"FROM scratch\nENV A\n",
    "ENV without =": b"FROM scratch\nENV A=1 B\n",
    "LABEL blank name": b"FROM scratch\nLABEL =x\n",
    "ARG blank": b"ARG =x\nFROM scratch\n",
    "bad ${}": b"FROM scratch\nENV A=${\n",
    "bad substitution": b"FROM scratch\nENV A=${:x}\n",
    "unset :?": b"FROM scratch\nENV A=${NOPE:?must be set}\n",
    "unknown flag": b"FROM scratch\nCOPY --frm=a b c\n",
    "flag without value": b"FROM scratch\nCOPY --from a b\n",
    "bad --chmod": b"FROM scratch\nCOPY --chmod=999 a /b\n",
    "bad mount": b"FROM scratch\nRUN --mount=type=nope true\n",
    "bad mount option": b"FROM scratch\nRUN --mount=type=bind,nope=1 true\n",
    "bad network": b"FROM scratch\nRUN --network=wifi true\n",
    "COPY one argument": b"FROM scratch\nCOPY a\n",
    "EXPOSE word": b"FROM scratch\nEXPOSE abc/xyz\n",
    "EXPOSE range": b"FROM scratch\nEXPOSE 0-70000\n",
    "EXPOSE empty proto": b"FROM scratch\nEXPOSE 80/\n",
    "HEALTHCHECK bad interval": b"FROM scratch\nHEALTHCHECK --interval=soon CMD true\n",
    "HEALTHCHECK NONE args": b"FROM scratch\nHEALTHCHECK NONE x\n",
    "HEALTHCHECK no CMD": b"FROM scratch\nHEALTHCHECK CMD\n",
    "ONBUILD FROM": b"FROM scratch\nONBUILD FROM x\n",
    "ONBUILD ONBUILD": b"FROM scratch\nONBUILD ONBUILD RUN x\n",
    "ONBUILD empty": b"FROM scratch\nONBUILD\n",
    "SHELL not JSON": b"FROM scratch\nSHELL /bin/sh -c\n",
    "VOLUME empty": b'FROM scratch\nVOLUME [""]\n',
    "WORKDIR two words": b"FROM scratch\nWORKDIR\n",
    "USER empty": b"FROM scratch\nUSER\n",
    "STOPSIGNAL empty": b"FROM scratch\nSTOPSIGNAL\n",
    "bad escape directive": b"# escape=x\nFROM scratch\n",
    "two escape directives": b"# escape=`\n# escape=`\nFROM scratch\n",
    "LABEL invalid UTF-8": b"FROM scratch\nLABEL a=\xff\xfe\n",
    "RUN invalid UTF-8": b"FROM scratch\nRUN echo \xc3\x28\n",
    "heredoc invalid UTF-8": b"FROM scratch\nCOPY <<EOF /x\n\xff\nEOF\n",
    "NUL bytes": b"FROM scratch\nLABEL a=\x00b\n",
    "control characters": b"FROM scratch\nLABEL \x01=\x02\n",
    "CR line ends": b"FROM scratch\rRUN true\r",
    "BOM then nothing": b"\xef\xbb\xbf",
    "only a backslash": b"\\\n",
    "trailing continuation": b"FROM scratch\nRUN true \\",
    "deep JSON": b"FROM scratch\nCMD " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep substitution": b"FROM scratch\nENV A=" + b"${A:-" * 3000 + b"}" * 3000 + b"\n",
    "line over 64 KiB": b"FROM scratch\nLABEL a=" + b"x" * 70000 + b"\n",
    "doubling expansion": b"FROM scratch\nENV A=" + b"x" * 1000 + b"\nENV B=" + b"$A" * 30000
                          + b"\nENV C=" + b"$B" * 30000 + b"\n",
    "many large expansions": b"FROM scratch\nENV A=" + b"x" * 1000 + b"\n"
                             + b"".join(b"ENV A%d=" % i + b"$A" * 15000 + b"\n" for i in range(6)),
    "unknown --from stage": b"FROM scratch\nCOPY --from=nowhere /a /b\n",
    "circular stages": b"FROM b AS a\nFROM a AS b\n",
    "stage index too big": b"FROM scratch\nCOPY --from=7 /a /b\n",
}


def mutations(seed: int = 9, per_file: int = 6) -> dict[str, bytes]:
    """Real Dockerfiles cut short, with a byte doubled, dropped or replaced: the samples' Dockerfiles,
    and the conformance files where they are beside the repository."""
    root = conformance_root()
    samples = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*/Dockerfile"))
    seeds = [(path, 40) for path in samples]  # always, so a fresh clone has a corpus too
    if root is not None:
        seeds += [(path, per_file) for path in sorted(root.rglob("Dockerfile"))]
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for path, count in seeds:
        data = path.read_bytes()
        if not data:
            continue
        name = path.parent.name
        for i in range(count):
            at = rng.randrange(len(data))
            kind = i % 3
            if kind == 0:
                mutated = data[:at]
            elif kind == 1:
                mutated = data[:at] + data[at : at + 1] * 2 + data[at + 1 :]
            else:
                mutated = data[:at] + bytes([rng.choice(b'"[]{}$\\`<-=\n\xff')]) + data[at + 1 :]
            out[f"{name} #{i}"] = mutated
    return out
