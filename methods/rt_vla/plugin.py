from harness.plugins import register_method

register_method("rt_vla", "methods.rt_vla.adapter:RTVLAMethod",
                "RT-VLA: compact student by multi-level (output, feature, language) distillation of the reasoning "
                "teacher; vision-only or vision+language inference", variants=["vision_language", "vision_only", "small"])
