"""Draw the pipeline figures of the book: the method's seven steps (pipeline.png, in the
introduction) and one per chapter with its steps marked "you are here" (pipeline_0N.png).

    python notebooks/figures/make_figures.py

The PNGs are committed next to this script; book/build.py copies this folder into the book.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from freezelab.plots import CHAPTER_STEPS, book_style, plot_pipeline  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    book_style()
    for chapter, name in [(None, "pipeline.png"), *((c, f"pipeline_{c:02d}.png") for c in CHAPTER_STEPS)]:
        fig = plot_pipeline(chapter)
        fig.savefig(HERE / name, metadata={"Software": None})
        plt.close(fig)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
