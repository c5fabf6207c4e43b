"""``ralu eval``'s built-in prompts: written for this project (not taken from any benchmark),
a few of each kind that tends to separate samplers: fine texture, small text, counting and
colours bound to objects, faces and hands, wide scenes with little detail, and dense ones.
For the field's prompt sets (DrawBench, GenEval, T2I-CompBench) see docs/eval.md."""

PROMPTS = (
    # fine texture and high-frequency detail
    "a close-up of a knitted wool scarf in mustard yellow, every stitch visible",
    "the bark of an old oak tree covered in pale green lichen, macro photograph",
    "a sandy beach at low tide with ripples and tiny shells, seen from above",
    "a stack of weathered books with cracked leather spines on a wooden shelf",
    # small text
    "a chalkboard outside a bakery that reads FRESH BREAD TODAY in white letters",
    "a vintage enamel street sign reading ORCHARD LANE on a brick wall",
    "a paper coffee cup with the word MONDAY handwritten on its side",
    # counting, colours and positions
    "three red apples and two green pears on a white plate",
    "a blue bicycle leaning against a yellow door, a black cat sitting on its seat",
    "four paper lanterns in a row: red, orange, green and purple",
    "a small glass cube on top of a large wooden sphere, studio lighting",
    # people, faces and hands
    "portrait of an elderly fisherman with a grey beard, soft window light",
    "a child's hands holding a baby bird, shallow depth of field",
    "a violinist on a dim stage, her bow mid-stroke, spotlight from above",
    # animals
    "a red fox curled up asleep in fresh snow, early morning",
    "a hummingbird hovering beside a purple trumpet flower, fast shutter",
    "a tabby kitten peeking out of a cardboard box",
    # wide scenes with large smooth regions
    "a lone sailboat on a calm lake at dusk, pastel sky reflected in the water",
    "rolling hills under a clear blue sky with a single tree on the horizon",
    "a minimalist white room with one orange armchair and long shadows",
    # dense scenes
    "a crowded night market with hanging lights, steam rising from food stalls",
    "an overgrown greenhouse full of ferns, orchids and hanging vines",
    "a busy workshop bench covered in tools, wires and half-built clocks",
    "an aerial view of a harbour town with colourful houses and fishing boats",
)
