/* Stand-in for libnvinfer.so.10: every factory returns NULL, so the real TensorRT
 * Python bindings import and their classes/enums are usable, while anything that
 * needs a Builder or Runtime fails cleanly ("factory function returned nullptr").
 * Test aid only (DESIGN.md section 4); never shipped. */
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { (void)logger; (void)version; return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { (void)engine; (void)logger; (void)version; return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { (void)logger; (void)version; return NULL; }
void* getPluginRegistry(void) { return NULL; }
void* getBuilderPluginRegistry(int kind) { (void)kind; return NULL; }
int getInferLibVersion(void) { return 0; }
