"Render nbs/index.ipynb to README.md (nbdev-readme needs Quarto, which cannot be installed here)."
from pathlib import Path
import nbformat

root = Path(__file__).resolve().parent.parent
nb = nbformat.read(root / "nbs" / "index.ipynb", as_version=4)
parts = [c.source if c.cell_type == "markdown" else f"```python\n{c.source}\n```" for c in nb.cells
         if c.source.strip() and not c.source.lstrip().startswith("#| hide")]
text = "<!-- generated from nbs/index.ipynb by scripts/readme.py: edit the notebook -->\n\n" + "\n\n".join(parts) + "\n"
(root / "README.md").write_text(text)
