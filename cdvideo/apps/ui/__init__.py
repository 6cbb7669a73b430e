"""`cdvideo ui`: the web app (Gradio, `pip install 'cdvideo[ui]'`), calling the same functions as the CLI."""
