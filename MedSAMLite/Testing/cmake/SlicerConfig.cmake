# Stand-in for a Slicer build's SlicerConfig.cmake, so the extension's CMake files can be checked
# without building Slicer:  cmake -S <repo> -B <build> -DSlicer_DIR=<this folder>
#
# It mirrors the checks of Slicer's own macros (known keywords, NAME given, every listed file exists)
# and of the extension metadata, and records what it was given in ${SLICER_STAND_IN_RECORD}, one
# "KIND<TAB>value" line each, for MedSAMLite/Testing/tests/test_extension_files.py to compare with
# the files on disk. It builds and installs nothing.

set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")

set(SLICER_STAND_IN_RECORD "${CMAKE_BINARY_DIR}/slicer-stand-in-record.txt")
file(WRITE "${SLICER_STAND_IN_RECORD}" "")

# Record the values of a list: one "KIND<TAB>value" line each.
function(_slicer_stand_in_record kind)
  foreach(value IN LISTS ARGN)
    file(APPEND "${SLICER_STAND_IN_RECORD}" "${kind}\t${value}\n")
  endforeach()
endfunction()

# The absolute path of a listed file (as Slicer resolves it, ".py" may be left off a script),
# or a FATAL_ERROR naming it if it does not exist.
function(_slicer_stand_in_existing_file caller kind value out_var)
  if(IS_ABSOLUTE "${value}")
    set(path "${value}")
  else()
    set(path "${CMAKE_CURRENT_SOURCE_DIR}/${value}")
  endif()
  if(NOT EXISTS "${path}" AND EXISTS "${path}.py")
    set(path "${path}.py")
  endif()
  if(NOT EXISTS "${path}" OR IS_DIRECTORY "${path}")
    message(FATAL_ERROR "${caller}(${kind}) given nonexistent file '${value}'")
  endif()
  file(RELATIVE_PATH relative "${CMAKE_SOURCE_DIR}" "${path}")
  set(${out_var} "${relative}" PARENT_SCOPE)
endfunction()

# Same keywords as Slicer's CMake/SlicerMacroBuildScriptedModule.cmake.
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT MY_SLICER_NAME)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule(): NAME is mandatory")
  endif()
  if(NOT MY_SLICER_SCRIPTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule(${MY_SLICER_NAME}): no SCRIPTS given")
  endif()
  _slicer_stand_in_record(MODULE "${MY_SLICER_NAME}")
  foreach(kind SCRIPTS RESOURCES)
    foreach(value IN LISTS MY_SLICER_${kind})
      _slicer_stand_in_existing_file(slicerMacroBuildScriptedModule ${kind} "${value}" path)
      _slicer_stand_in_record(${kind} "${path}")
    endforeach()
  endforeach()
  foreach(option WITH_GENERIC_TESTS WITH_SUBDIR)
    if(MY_SLICER_${option})
      _slicer_stand_in_record(OPTION ${option})
    endif()
  endforeach()
  message(STATUS "Stand-in: scripted module ${MY_SLICER_NAME}")
endfunction()

# Same keywords as Slicer's slicer_add_python_unittest (CMake/SlicerMacroPythonTesting.cmake).
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicer_add_python_unittest(): \"${MY_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT MY_SCRIPT)
    message(FATAL_ERROR "slicer_add_python_unittest(): SCRIPT is mandatory")
  endif()
  _slicer_stand_in_existing_file(slicer_add_python_unittest SCRIPT "${MY_SCRIPT}" path)
  _slicer_stand_in_record(UNITTEST "${path}")
endfunction()
