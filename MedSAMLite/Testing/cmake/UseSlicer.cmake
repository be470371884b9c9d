# Stand-in for Slicer's UseSlicer.cmake (see SlicerConfig.cmake in this folder).
option(BUILD_TESTING "Configure the extension's tests" ON)
set(SLICER_STAND_IN_USE_FILE_INCLUDED TRUE)
