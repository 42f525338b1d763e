#!/usr/bin/env python3
# Opens N idle AMQP connections (one channel each) to a Lepus on 127.0.0.1:5697 and
# reports the broker RSS growth per connection. Usage: idle_connections.py N BROKER_PID
import socket, struct, sys, time, os
N = int(sys.argv[1]); pid = sys.argv[2]
def frame(t, ch, payload): return struct.pack(">BHI", t, ch, len(payload)) + payload + b"\xce"
def sstr(x): return bytes([len(x)]) + x
def lstr(x): return struct.pack(">I", len(x)) + x
def rss(): return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0])
def read_frame(s):
    h = b""
    while len(h) < 7: h += s.recv(7 - len(h))
    t, ch, size = struct.unpack(">BHI", h)
    rest = b""
    while len(rest) < size + 1: rest += s.recv(size + 1 - len(rest))
    return t, ch, rest[:size]
before = rss(); socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", 5697))
    s.sendall(b"AMQP\x00\x00\x09\x01"); read_frame(s)
    s.sendall(frame(1,0, struct.pack(">HH",10,11) + struct.pack(">I",0) + sstr(b"PLAIN") + lstr(b"\0guest\0guest") + sstr(b"en_US"))); read_frame(s)
    s.sendall(frame(1,0, struct.pack(">HHHIH",10,31,2047,131072,0)))
    s.sendall(frame(1,0, struct.pack(">HH",10,40) + sstr(b"/") + sstr(b"") + b"\0")); read_frame(s)
    s.sendall(frame(1,1, struct.pack(">HH",20,10) + sstr(b""))); read_frame(s)
    socks.append(s)
after = rss()
print(f"{N} idle connections with one channel: RSS {before} kB -> {after} kB, {(after-before)*1024/N:.0f} bytes per connection")
