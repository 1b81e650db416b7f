# Audio recorder (issue 17): the real libasound capture path against a paced ioplug PCM that needs
# no sound card (tests/helpers/alsa-tick.c), loaded through an ALSA configuration file.
add_library(asound_module_pcm_pirectick MODULE ${CMAKE_CURRENT_LIST_DIR}/helpers/alsa-tick.c)
target_link_libraries(asound_module_pcm_pirectick PRIVATE PkgConfig::ALSA)
# alsa-lib picks the dynamic form of SND_PCM_PLUGIN_SYMBOL only with PIC defined (include/global.h).
target_compile_definitions(asound_module_pcm_pirectick PRIVATE PIC)
# libasound looks its entry point up by name: the project-wide -fvisibility=hidden must not hide it.
target_compile_options(asound_module_pcm_pirectick PRIVATE -fvisibility=default)
set_target_properties(asound_module_pcm_pirectick PROPERTIES PREFIX "lib")
set(PIREC_ALSA_CONF ${CMAKE_CURRENT_BINARY_DIR}/alsa-tick.conf)
file(GENERATE OUTPUT ${PIREC_ALSA_CONF} CONTENT
     "pcm_type.pirectick { lib \"$<TARGET_FILE:asound_module_pcm_pirectick>\" }\npcm.tick { type pirectick }\npcm.tick_fast { type pirectick drift_ppm 500 }\npcm.tick_unplug { type pirectick fail_after_ms 300 }\n")

pirec_add_test(test-audio SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-audio.c helpers/counters.c
               LIBS pirec_audio pirec_test_controller_util pirec_libcsv LABELS audio concurrency TIMEOUT 120)
target_include_directories(test-audio PRIVATE ${CMAKE_SOURCE_DIR}/recorders/audio)
add_dependencies(test-audio asound_module_pcm_pirectick pirec-audio)
set_property(TEST test-audio APPEND PROPERTY ENVIRONMENT "ALSA_CONFIG_PATH=${PIREC_ALSA_CONF}")

# Under `pirec record`: the controller starts [audio.NAME] like a camera.
pirec_add_test(test-audio-controller SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-audio-controller.c
               LIBS pirec_test_controller_util LABELS audio controller TIMEOUT 120)
add_dependencies(test-audio-controller asound_module_pcm_pirectick pirec pirec-notes pirec-audio)
set_property(TEST test-audio-controller APPEND PROPERTY ENVIRONMENT "ALSA_CONFIG_PATH=${PIREC_ALSA_CONF}")
