"""What each process of test_inputs' concurrency test runs: one clip under the name every process writes. A module of
its own, importing only the clip writer: a spawned process imports this, not the test file's torch and diffusers."""

from PIL import Image

from cdvideo.data.clips import write_clip


def render_same_name(args) -> list[str]:
    folder, k = args
    frames = [Image.new("RGB", (16, 16), (k * 20, 0, 0))] * 2
    return [str(p) for p in write_clip(frames, folder, "a_dog_s42", 8, ["gif"], {"writer": k})]
