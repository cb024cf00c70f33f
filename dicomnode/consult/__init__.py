"""The consultation report: the centre's answer that goes home to the referring hospital.

`making` writes the report of each decided case (a PDF in the hospital's
language, de-identified as the centre keeps it, filed with the signed plans)
and queues it for the hospital's AE; `sending` puts that hospital's own
patient identity back into each instance as the forwarder sends it, in
memory, with the linkage key; `pdf` lays the report out and `words` says it
in English, Russian or Chinese.
"""
