// expect_throw<E>(f, fragment): f() must throw exactly an E (or a type derived from it) whose
// what() contains fragment.
#pragma once

#include <catch2/catch.hpp>

#include <string>

namespace batchnorm_test {

template <class E, class F>
void expect_throw(F&& f, const std::string& fragment) {
  try {
    f();
  } catch (const E& e) {
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains(fragment));
    return;
  } catch (const std::exception& e) {
    FAIL_CHECK("threw another exception type: " << e.what());
    return;
  }
  FAIL_CHECK("did not throw; expected a message containing \"" << fragment << "\"");
}

}  // namespace batchnorm_test
