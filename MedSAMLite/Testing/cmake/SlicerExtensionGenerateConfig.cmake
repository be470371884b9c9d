# Stand-in for Slicer's extension config step: the metadata the Extension Wizard and the
# Extensions Index read must all be set, after include(${Slicer_USE_FILE}).
if(NOT SLICER_STAND_IN_USE_FILE_INCLUDED)
  message(FATAL_ERROR "include(\${Slicer_USE_FILE}) must come before include(\${Slicer_EXTENSION_GENERATE_CONFIG})")
endif()
foreach(name HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  if("${EXTENSION_${name}}" STREQUAL "")
    message(FATAL_ERROR "EXTENSION_${name} is not set or empty in ${CMAKE_SOURCE_DIR}/CMakeLists.txt")
  endif()
  _slicer_stand_in_record(EXTENSION_${name} "${EXTENSION_${name}}")
endforeach()
set(SLICER_STAND_IN_CONFIG_GENERATED TRUE)
