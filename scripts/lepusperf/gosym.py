"""Names the frames of a stripped Go binary in `perf script` output.

    perf script -i perf.data | python3 -m lepusperf.gosym /usr/bin/garagemq

Debian's garagemq is stripped (no .symtab), so perf prints its frames as
`[unknown] (/usr/bin/garagemq)`. The Go runtime's own function table is
still in the binary (section .gopclntab, Go 1.18+ layout): a header with
the text start, then one (entry offset, func offset) pair per function
sorted by entry, each func record naming its function. This filter reads
that table (no Go toolchain needed: `go tool addr2line` takes the .text
section as the text start, which cgo's C start-up code puts before the Go
code, and so names the wrong functions) and fills the names in. perf
prints such a frame as its offset in the file, which .text's address and
offset turn into the function's address (the binary is not
position-independent). Anything it cannot read passes through unchanged."""
import bisect
import re
import struct
import sys

# First 4 bytes of .gopclntab for the Go 1.18 and 1.20+ layouts (the same header fields).
MAGICS = (0xFFFFFFF0, 0xFFFFFFF1)


def sections(data):
    """{name: (address, file offset, size)} of a little-endian ELF64 file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx][4]

    def name(n):
        return data[strtab + n:data.index(b"\0", strtab + n)].decode()

    return {name(n): (addr, off, size) for n, _, _, addr, off, size in raw}


def functions(path):
    """(sorted entry addresses, names, .text (address, file offset, size)) from the binary's .gopclntab."""
    with open(path, "rb") as f:
        data = f.read()
    secs = sections(data)
    _, off, _ = secs[".gopclntab"]
    magic, = struct.unpack_from("<I", data, off)
    if magic not in MAGICS or data[off + 7] != 8:
        raise ValueError(f"unknown .gopclntab layout {magic:#x}")
    nfunc, _, text_start, funcname_off, _, _, _, pcln_off = struct.unpack_from("<8Q", data, off + 8)
    functab = off + pcln_off
    entries, names = [], []
    for i in range(nfunc):
        entry_off, func_off = struct.unpack_from("<II", data, functab + 8 * i)
        _, name_off = struct.unpack_from("<Ii", data, functab + func_off)
        start = off + funcname_off + name_off
        entries.append(text_start + entry_off)
        names.append(data[start:data.index(b"\0", start)].decode(errors="replace"))
    return entries, names, secs[".text"]


def address(x, text):
    """The address of a frame perf printed as `x`: perf prints the offset in the
    file of a frame it has no symbol for."""
    addr, off, size = text
    return x - off + addr if off <= x < off + size else None


def main():
    binary = sys.argv[1]
    frame = re.compile(r"^(\s+)([0-9a-f]+) \[unknown\] \((" + re.escape(binary) + r")\)$")
    try:
        entries, names, text = functions(binary)
    except (OSError, KeyError, ValueError, struct.error) as e:
        print(f"gosym: {binary}: {e}; frames left unnamed", file=sys.stderr)
        entries, names, text = [], [], None
    for line in sys.stdin:
        m = frame.match(line.rstrip("\n")) if entries else None
        a = address(int(m.group(2), 16), text) if m else None
        if a is not None:
            i = bisect.bisect_right(entries, a) - 1
            if i >= 0:
                line = f"{m.group(1)}{m.group(2)} {names[i]} ({m.group(3)})\n"
        sys.stdout.write(line)


if __name__ == "__main__":
    main()
