from harness.plugins import register_method

register_method("latent_vla", "methods.latent_vla.adapter:LatentVLAMethod",
                "LatentVLA: latent action model on unlabelled frames -> latent-pretrained VLA -> distilled "
                "vision(+command) student", variants=["vla"])
