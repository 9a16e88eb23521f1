"""The libvirt backend's pieces (sandbox/libvirt.py is the backend itself).

domain.py  the domain XML, built as data
agent.py   the host end of the in-guest exec agent's virtio-serial channel
save.py    saved guest states, copied and retargeted for a fast start
image.py   the VM disk image: `dispatch images build --vm`
"""
