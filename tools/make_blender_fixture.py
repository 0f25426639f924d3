"""Renders the real-renderer test scene (tests/fixtures/blender_scene) with Blender's Cycles.

    blender -b --factory-startup --python tools/make_blender_fixture.py -- <outdir> [size]

Why: every other scene in the tests is drawn by jaxmm's own renderer, so a pose or image
convention shared by the writer and the reader would go unnoticed. This one comes from an
independent path tracer, in the NeRF-synthetic layout Blender's own export scripts write:
`transforms_{train,test}.json` with `camera_angle_x` and per-frame `file_path` +
`transform_matrix` (the camera object's world matrix: Blender/OpenGL axes, camera looks down
its −z with +y up) and no `time`, plus RGBA PNGs with a transparent film.

The scene: five coloured primitives with Principled materials on a low plinth, a sun and a
grey world for ambient light. Cameras: 40 training and 8 test views on the upper hemisphere,
radius 4, looking at the origin; the test views sit at other azimuths and elevations.
Deterministic: fixed camera layout, Cycles seed 0, CPU, 64 samples, no denoiser.
Runs only inside Blender (imports `bpy`); it is not part of the jaxmm package.
"""

import json
import math
import os
import sys

import bpy
from mathutils import Vector

NUM_TRAIN, NUM_TEST, RADIUS, FOV_X_DEG = 40, 8, 4.0, 40.0


def parse_args() -> tuple[str, int]:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if not argv:
        raise SystemExit("usage: blender -b --python make_blender_fixture.py -- <outdir> [size]")
    return argv[0], int(argv[1]) if len(argv) > 1 else 96


def material(name: str, rgb: tuple[float, float, float], roughness: float, metallic=0.0):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    return mat


def add(op, mat, smooth: bool = False, **kwargs):
    op(**kwargs)
    obj = bpy.context.active_object
    obj.data.materials.append(mat)
    for p in obj.data.polygons:  # smooth shading only where there are no hard edges
        p.use_smooth = smooth
    return obj


def build_scene() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.ops.mesh
    add(mesh.primitive_cylinder_add, material("plinth", (0.75, 0.72, 0.65), 0.8),
        radius=1.1, depth=0.15, location=(0, 0, -0.62), vertices=64)  # fmt: skip
    add(mesh.primitive_cube_add, material("red", (0.8, 0.08, 0.05), 0.5),
        size=0.6, location=(0.5, -0.35, -0.25), rotation=(0, 0, 0.4))  # fmt: skip
    add(mesh.primitive_uv_sphere_add, material("green", (0.1, 0.6, 0.15), 0.35),
        radius=0.35, location=(-0.45, -0.3, -0.2), segments=48, ring_count=24,
        smooth=True)  # fmt: skip
    add(mesh.primitive_cylinder_add, material("blue", (0.08, 0.2, 0.8), 0.45),
        radius=0.22, depth=0.9, location=(0.0, 0.5, -0.1), vertices=48)  # fmt: skip
    add(mesh.primitive_cone_add, material("yellow", (0.9, 0.7, 0.05), 0.6),
        radius1=0.3, depth=0.6, location=(0.55, 0.45, -0.25), vertices=48)  # fmt: skip
    add(mesh.primitive_torus_add, material("metal", (0.85, 0.85, 0.9), 0.25, metallic=1.0),
        major_radius=0.3, minor_radius=0.08, location=(-0.5, 0.4, -0.45), smooth=True)  # fmt: skip

    bpy.ops.object.light_add(type="SUN", location=(2, -2, 4))
    sun = bpy.context.active_object
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), 0.0, math.radians(30))
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.4, 0.4, 0.42, 1.0)
    bpy.context.scene.world = world


def setup_render(size: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 64
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    scene.cycles.max_bounces = 4
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"


def camera_positions(n: int, held_out: bool) -> list[Vector]:
    """Training: a golden-angle spiral over elevations 10..70°; test: between those
    azimuths, at elevations 20 / 45°."""
    out = []
    for i in range(n):
        if held_out:
            az, el = 360.0 * (i + 0.5) / n + 11.0, 20.0 + 25.0 * (i % 2)
        else:
            az, el = (137.508 * i) % 360.0, 10.0 + 60.0 * (i + 0.5) / n
        a, e = math.radians(az), math.radians(el)
        out.append(RADIUS * Vector((math.cos(e) * math.cos(a), math.cos(e) * math.sin(a),
                                    math.sin(e))))  # fmt: skip
    return out


def render_split(outdir: str, split: str, cam_obj, positions: list[Vector]) -> None:
    scene = bpy.context.scene
    os.makedirs(os.path.join(outdir, split), exist_ok=True)
    frames = []
    for i, pos in enumerate(positions):
        cam_obj.location = pos
        # Look at the origin: the camera's −z toward the target, +y toward world up.
        cam_obj.rotation_euler = (-pos).to_track_quat("-Z", "Y").to_euler()
        bpy.context.view_layer.update()
        rel = f"./{split}/r_{i:03d}"
        scene.render.filepath = os.path.join(outdir, split, f"r_{i:03d}.png")
        bpy.ops.render.render(write_still=True)
        matrix = [list(row) for row in cam_obj.matrix_world]
        frames.append({"file_path": rel, "transform_matrix": matrix})
    meta = {"camera_angle_x": cam_obj.data.angle_x, "frames": frames}
    with open(os.path.join(outdir, f"transforms_{split}.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main() -> None:
    outdir, size = parse_args()
    build_scene()
    setup_render(size)
    bpy.ops.object.camera_add()
    cam = bpy.context.active_object
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.angle = math.radians(FOV_X_DEG)
    bpy.context.scene.camera = cam
    render_split(outdir, "train", cam, camera_positions(NUM_TRAIN, held_out=False))
    render_split(outdir, "test", cam, camera_positions(NUM_TEST, held_out=True))
    print(f"wrote {NUM_TRAIN} train + {NUM_TEST} test views at {size}² to {outdir}"
          f" with Blender {bpy.app.version_string}")  # fmt: skip


if __name__ == "__main__":
    main()
