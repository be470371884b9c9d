# Stand-in for Slicer's extension packaging step: only checks it comes last, as Slicer requires.
if(NOT SLICER_STAND_IN_CONFIG_GENERATED)
  message(FATAL_ERROR "include(\${Slicer_EXTENSION_GENERATE_CONFIG}) must come before include(\${Slicer_EXTENSION_CPACK})")
endif()
