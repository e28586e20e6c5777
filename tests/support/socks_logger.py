"""A SOCKS5 proxy for the isolation test: it accepts any user name and password (as Tor
does with IsolateSOCKSAuth) and, for every connection, writes one JSON line to the log
file when it closes: the SOCKS user name, whether the client sent an owner signature
(HTTP header or WebSocket mailbox subscription), whether it sent a group token (HTTP header
or WebSocket group subscription), and the group ids it named. Usage:
python3 socks_logger.py PORT LOGFILE (prints "ready" when listening on 127.0.0.1:PORT)."""

import asyncio
import json
import re
import sys

GROUP = re.compile(rb'/v1/groups/([A-Za-z0-9_-]{22})|"group_id":"([A-Za-z0-9_-]{22})"')


async def pipe(reader, writer, seen):
    try:
        while data := await reader.read(65536):
            if seen is not None:
                seen.append(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(reader, writer, log):
    user = None
    try:
        ver, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        if 2 in methods:
            writer.write(b"\x05\x02")
            await writer.drain()
            await reader.readexactly(1)
            ulen = (await reader.readexactly(1))[0]
            user = (await reader.readexactly(ulen)).decode("utf-8", "replace")
            plen = (await reader.readexactly(1))[0]
            await reader.readexactly(plen)
            writer.write(b"\x01\x00")
        else:
            writer.write(b"\x05\x00")
        await writer.drain()
        _, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        elif atyp == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            writer.close()
            return
        port = int.from_bytes(await reader.readexactly(2), "big")
        up_r, up_w = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        writer.close()
        return
    sent = []
    await asyncio.gather(pipe(reader, up_w, sent), pipe(up_r, writer, None))
    data = b"".join(sent)
    groups = sorted({(a or b).decode() for a, b in GROUP.findall(data)})
    line = {
        "user": user,
        "owner_signature": b"x-samizdat-signature" in data or b'"subscribe_mailbox"' in data,
        "group_token": b"x-samizdat-token" in data or b'"subscribe_group"' in data,
        "groups": groups,
        "bytes": len(data),
    }
    with open(log, "a") as f:
        f.write(json.dumps(line) + "\n")


async def main():
    port, log = int(sys.argv[1]), sys.argv[2]
    server = await asyncio.start_server(lambda r, w: handle(r, w, log), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
