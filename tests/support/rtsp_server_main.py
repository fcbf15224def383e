"""GStreamer's RTSP server on loopback, serving one H.264 MP4 clip: run by Debian's /usr/bin/python3 (it has
python3-gi; the project's virtualenv does not), started and killed by tests/support/rtsp_server.py.

    /usr/bin/python3 rtsp_server_main.py --port 8554 --path cam --clip clip.mp4 [--loop] [--encode]

Every client gets its own pipeline from the clip's start, played at the clip's own rate (the sinks sync to the
clock, as a camera would send). `--encode` decodes and re-encodes with x264 tuned for zero latency, a live
camera's stream; without it the clip's H.264 is only repacketised. `--loop` plays the clip again at its end
(a segment seek, so the timestamps go on) instead of ending the session (not with `--encode`). It prints
`READY <port>` once it listens, or `ERROR <reason>` and exits 2 when GStreamer, its RTSP server or an element is
missing. Stdlib and gi only."""

from __future__ import annotations

import argparse
import signal
import sys


def fail(reason: str) -> None:
    print(f"ERROR {reason}", flush=True)
    raise SystemExit(2)


try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)  # before the media subclass below: its signals name Gst types
except (ImportError, ValueError) as exc:  # ValueError: gi has no such namespace (the typelib is missing)
    fail(f"GStreamer's RTSP server is not importable by {sys.executable} ({exc}): install python3-gi, "
         "gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly,bad} and gstreamer1.0-libav")

REPACK_ELEMENTS = ("filesrc", "qtdemux", "h264parse", "rtph264pay")
ENCODE_ELEMENTS = (*REPACK_ELEMENTS, "avdec_h264", "videoconvert", "x264enc")


def launch_line(clip: str, encode: bool) -> str:
    location = clip.replace("\\", "\\\\").replace('"', '\\"')
    source = f'filesrc location="{location}" ! qtdemux ! h264parse'
    if encode:
        source += (" ! avdec_h264 ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 "
                   "bitrate=4000 ! video/x-h264,profile=baseline ! h264parse")
    return f"( {source} config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"


class LoopingMedia(GstRtspServer.RTSPMedia):
    """Plays its clip again at the end: each segment seek queues the next, the running time goes on."""

    def do_handle_message(self, message: Gst.Message) -> bool:
        if message.type == Gst.MessageType.SEGMENT_DONE:
            self.get_element().seek(1.0, Gst.Format.TIME, Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0,
                                    Gst.SeekType.NONE, -1)
            return True
        handled: bool = GstRtspServer.RTSPMedia.do_handle_message(self, message)
        return handled


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, line: str, loop: bool) -> None:
        super().__init__()
        self.set_launch(line)
        self.set_shared(False)
        self.set_eos_shutdown(False)
        self._loop = loop
        if loop:
            self.set_media_gtype(LoopingMedia)
            self.connect("media-configure", self._configure)

    def _configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        media.connect("prepared", self._prepared)

    @staticmethod
    def _prepared(media: GstRtspServer.RTSPMedia) -> None:
        # the first segment seek (from the paused, prerolled pipeline): its SEGMENT_DONE starts the next round
        media.get_element().seek(1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT,
                                 Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--encode", action="store_true")
    args = parser.parse_args()
    if args.loop and args.encode:
        # the segment seek through x264enc leaves the media without a rate (an assertion in rtsp-media.c)
        fail("--loop and --encode together are not supported: loop the repacketised clip, or let the client "
             "reconnect at the end of a re-encoded one")

    missing = [name for name in (ENCODE_ELEMENTS if args.encode else REPACK_ELEMENTS)
               if Gst.ElementFactory.find(name) is None]
    if missing:
        fail(f"GStreamer elements missing: {', '.join(missing)} (gstreamer1.0-plugins-good/-ugly/-bad, -libav)")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory("/" + args.path.strip("/"), Factory(launch_line(args.clip, args.encode),
                                                                               args.loop))
    if server.attach(None) == 0:
        fail(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
