#!/usr/bin/env python3
"""A tiny Stratum V1 CPU miner for the interop check (pure Python, slow).

Usage: sv1_miner.py HOST PORT USERNAME SECONDS
Subscribes, authorizes, mines the latest mining.notify job against the
mining.set_difficulty target and submits every share found. Prints one line
per event and a summary; exits 0 if at least one share was accepted.
"""
import hashlib
import json
import socket
import struct
import sys
import time

DIFF1 = 0x00000000FFFF0000000000000000000000000000000000000000000000000000


def sha256d(b):
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


class Miner:
    def __init__(self, host, port, user):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.next_id = 1
        self.pending = {}
        self.user = user
        self.extranonce1 = b""
        self.extranonce2_size = 4
        self.target = DIFF1
        self.job = None
        self.accepted = 0
        self.rejected = 0

    def send(self, method, params):
        msg_id = self.next_id
        self.next_id += 1
        self.pending[msg_id] = method
        line = json.dumps({"id": msg_id, "method": method, "params": params}) + "\n"
        self.sock.sendall(line.encode())
        return msg_id

    def poll(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            raise SystemExit("translator closed the connection")
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line))

    def handle(self, msg):
        method = msg.get("method")
        if method == "mining.set_difficulty":
            diff = float(msg["params"][0])
            self.target = int(DIFF1 / diff)
            print(f"set_difficulty {diff:g}", flush=True)
        elif method == "mining.notify":
            p = msg["params"]
            self.job = {
                "id": p[0], "prevhash": p[1], "coinb1": p[2], "coinb2": p[3],
                "branch": p[4], "version": p[5], "nbits": p[6], "ntime": p[7],
            }
            self.extranonce2 = 0
            print(f"notify job={p[0]} clean={p[8]}", flush=True)
        elif method is None:
            what = self.pending.pop(msg.get("id"), None)
            if what == "mining.subscribe":
                result = msg["result"]
                self.extranonce1 = bytes.fromhex(result[1])
                self.extranonce2_size = int(result[2])
                print(f"subscribed extranonce1={result[1]} extranonce2_size={result[2]}", flush=True)
            elif what == "mining.authorize":
                print(f"authorized: {msg.get('result')}", flush=True)
            elif what == "mining.submit":
                if msg.get("result") is True:
                    self.accepted += 1
                    print(f"share accepted ({self.accepted})", flush=True)
                else:
                    self.rejected += 1
                    print(f"share rejected: {msg.get('error')}", flush=True)

    def header_base(self):
        j = self.job
        en2 = self.extranonce2.to_bytes(self.extranonce2_size, "big")
        coinbase = bytes.fromhex(j["coinb1"]) + self.extranonce1 + en2 + bytes.fromhex(j["coinb2"])
        root = sha256d(coinbase)
        for node in j["branch"]:
            root = sha256d(root + bytes.fromhex(node))
        prev = bytes.fromhex(j["prevhash"])
        prev = b"".join(prev[i:i + 4][::-1] for i in range(0, 32, 4))
        head = (struct.pack("<I", int(j["version"], 16)) + prev + root
                + struct.pack("<I", int(j["ntime"], 16)) + struct.pack("<I", int(j["nbits"], 16)))
        return head, en2

    def mine(self, budget):
        """Hashes for about `budget` seconds on the current job."""
        if self.job is None:
            return
        head, en2 = self.header_base()
        job_id = self.job["id"]
        mid = hashlib.sha256(head)
        end = time.time() + budget
        nonce = 0
        while time.time() < end:
            for _ in range(20000):
                h = mid.copy()
                h.update(struct.pack("<I", nonce))
                digest = hashlib.sha256(h.digest()).digest()
                if int.from_bytes(digest, "little") <= self.target:
                    self.send("mining.submit", [self.user, job_id, en2.hex(), self.job["ntime"], f"{nonce:08x}"])
                nonce += 1
        self.extranonce2 += 1


def main():
    host, port, user, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    m = Miner(host, port, user)
    m.send("mining.subscribe", ["hashpool-interop-miner/0.1"])
    m.send("mining.authorize", [user, "x"])
    end = time.time() + seconds
    while time.time() < end:
        m.poll(0.05 if m.job else 1.0)
        m.mine(0.5)
    m.poll(1.0)
    print(f"SV1 miner summary: accepted={m.accepted} rejected={m.rejected}", flush=True)
    sys.exit(0 if m.accepted > 0 else 1)


if __name__ == "__main__":
    main()
